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


def test_a_registration_by_spec_gets_the_repositorys_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    follow = PlanChoice.following(PolicyKind.FOLLOW)
    repository = Repository(RepositoryDefaults(choice=follow))
    built: list[ModelConfig] = []

    async def build(config: ModelConfig, *_: Any, **__: Any) -> _Runtime:
        built.append(config)
        return _Runtime(config.name or "m", config)

    monkeypatch.setattr(repository, "_build", build)
    monkeypatch.setattr(repository, "_resolve", lambda config, files_anywhere: None)
    fat = PlanChoice(ChoiceKind.FAT)
    asyncio.run(repository.register_model(ModelConfig("tiny-resnet", name="own", choice=fat)))
    asyncio.run(repository.register("tiny-resnet", name="by-spec"))
    assert [config.choice for config in built] == [fat, follow]
    assert RepositoryDefaults().choice == PlanChoice(ChoiceKind.AUTO)
    assert ModelConfig("m").choice is None  # the repository's, when it is served
