"""Repository: registration options over the defaults, and the default version, with the
model building replaced (no worker starts)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from packrat.controller.batching import BatchingConfig
from packrat.controller.plan_choice import ChoiceKind, PlanChoice
from packrat.controller.policy import PolicyKind
from packrat.server.api import RegisterOptions
from packrat.server.errors import BadRequest, NotFound
from packrat.server.repository import ModelConfig, Repository, RepositoryDefaults
from packrat.types import parse_plan


class _Runtime:
    def __init__(self, name: str, config: ModelConfig) -> None:
        self.name, self.version, self.config = name, config.version, config

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@pytest.fixture
def repo(monkeypatch: pytest.MonkeyPatch) -> Repository:
    repository = Repository(RepositoryDefaults(batching=BatchingConfig(8, 0.0)))

    async def build(config: ModelConfig, source: Any, name: str, *_: Any, **__: Any) -> _Runtime:
        return _Runtime(name, config)

    monkeypatch.setattr(repository, "_build", build)
    monkeypatch.setattr(repository, "_resolve", lambda spec, files_anywhere: None)
    return repository


def test_registration_options_override_the_defaults(repo: Repository) -> None:
    options = RegisterOptions(max_batch_size=4, max_batch_delay_ms=50.0, batch_timeout_s=30.0)
    runtime: Any = asyncio.run(repo.register("tiny-resnet", name="r", options=options))
    assert runtime.config.batching == BatchingConfig(4, 50.0)
    assert runtime.config.batch_timeout_s == 30.0
    plain: Any = asyncio.run(repo.register("tiny-resnet", name="p"))
    assert (plain.config.batching.max_batch_size, plain.config.batch_timeout_s) == (8, None)
    with pytest.raises(BadRequest, match="ModelConfig.max_batch_size must be an int >= 1"):
        asyncio.run(repo.register("tiny-resnet", name="q", options=RegisterOptions(0)))


def test_set_default_chooses_the_version_requests_get(repo: Repository) -> None:
    async def main() -> None:
        for version in ("1", "2", "3"):
            await repo.register_model(ModelConfig("tiny-resnet", name="m", version=version))
        assert repo.get("m").version == "1"
        assert repo.set_default("m", "2").version == "2"
        assert repo.get("m").version == "2"
        assert sorted(r.version for r in repo.runtimes()) == ["1", "2", "3"]
        with pytest.raises(NotFound):
            repo.set_default("m", "9")
        await repo.unregister("m", "2")
        assert repo.get("m").version == "1"

    asyncio.run(main())


def test_the_servers_model_config_names_its_choice() -> None:
    plan = parse_plan("<2,1,4>")
    assert ModelConfig("m", plan=plan).plan_choice(PolicyKind.AUTO) == PlanChoice(
        ChoiceKind.PLAN, plan
    )
    assert ModelConfig("m", fat=True).plan_choice(PolicyKind.AUTO).kind is ChoiceKind.FAT
    assert ModelConfig("m").plan_choice(PolicyKind.FOLLOW).kind is ChoiceKind.FOLLOW
    config = ModelConfig("m", policy=PolicyKind.FIXED)
    assert config.plan_choice(PolicyKind.FOLLOW).kind is ChoiceKind.FIXED
