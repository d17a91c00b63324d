"""The repository builds each model's plan, policy and pool, and changes them, over fake
instance pools (no processes, no model loaded): a fake source, a profile file on one core."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from packrat.controller.batching import BatchingConfig
from packrat.controller.plan_choice import ChoiceKind, PlanChoice
from packrat.pool import EngineConfig, EngineState
from packrat.profiler.contention import ProfileKindSetting
from packrat.profiler.profile_file import Profile, save_profile
from packrat.server import repository as repository_module
from packrat.server.errors import BadRequest
from packrat.server.repository import ModelConfig, Repository, RepositoryDefaults
from packrat.stats import CellStats
from packrat.topology import synthetic_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from fake_pool import FakePools, FakeSource  # noqa: E402

CPU = min(os.sched_getaffinity(0))
LATENCY_MS = {1: 10.0, 2: 12.0, 4: 20.0}  # one thread, by batch


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    cells = {(1, b): CellStats(ms, ms, ms, 0.0, 5) for b, ms in LATENCY_MS.items()}
    path = tmp_path / "fake.json"
    save_profile(Profile("fake", "0" * 64, {}, "test", cells), path)
    return path


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakePools]:
    monkeypatch.setenv("PACKRAT_CACHE_DIR", str(tmp_path / "cache"))
    yield FakePools(lambda threads, batch: LATENCY_MS.get(batch, 20.0))


def repository_of(pools: FakePools, monkeypatch: pytest.MonkeyPatch) -> Repository:
    engine = EngineConfig(batch_timeout_s=30.0)
    repository = Repository(RepositoryDefaults(), engine_config=engine, pool_factory=pools)
    monkeypatch.setattr(repository, "_resolve", lambda config, files_anywhere: FakeSource())
    return repository


def config_of(profile: Path | None, **settings: object) -> ModelConfig:
    return ModelConfig(
        "fake", cores=(CPU,), batching=BatchingConfig(4, 5.0), profile=profile,
        backend="torch", precision="fp32", **settings,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_model_starts_on_its_first_plan_with_a_pool_for_its_policy(
    pools: FakePools, profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        repository = repository_of(pools, monkeypatch)
        auto = await repository.register_model(config_of(profile, batch_timeout_s=2.0))
        fixed = await repository.register_model(
            config_of(profile, name="f", choice=PlanChoice(ChoiceKind.FIXED))
        )
        fat = await repository.register_model(
            config_of(None, name="fat", choice=PlanChoice(ChoiceKind.FAT))
        )
        exact = await repository.register_model(config_of(profile, name="e", calibrate=False))
        try:
            assert [r.policy for r in (auto, fixed, fat)] == ["auto", "fixed", "pinned"]
            calibrations = [r.describe()["calibration"] for r in (auto, fat, exact)]
            assert calibrations[0]["corrections_total"] == 0  # checked against served batches
            assert calibrations[1:] == [None, None]  # no profile; calibrate = false
            assert auto.plan.describe() == "<1,1,4>" and auto.plan.layout == ((1, (CPU,)),)
            assert fat.plan.describe() == "<1,1,4>" and fat.describe()["split"] == "thread share"
            assert await asyncio.gather(*(auto.infer(float(r)) for r in range(3))) == [
                0.0, 2.0, 4.0,
            ]  # fmt: skip
            assert [p.workers for p in pools.made] == [1, 1, 1, 1]
            timeouts = [c.batch_timeout_s for c in pools.configs if c is not None]
            assert timeouts == [2.0, 30.0, 30.0, 30.0]
            assert auto.describe()["batching"]["batch_timeout_s"] == 2.0
        finally:
            await repository.close()
        assert all(p.state is EngineState.CLOSED for p in pools.made)

    asyncio.run(main())


def test_plans_and_policies_change_through_the_repository(
    pools: FakePools, profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        repository = repository_of(pools, monkeypatch)
        runtime = await repository.register_model(config_of(profile))
        try:
            await repository.set_plan("fake", plan="fat")
            assert runtime.policy == "pinned" and runtime.plan.describe() == "<1,1,4>"
            await repository.set_plan("fake", policy="follow")
            assert runtime.policy == "follow"
            with pytest.raises(BadRequest, match="unknown plan policy 'fast'"):
                await repository.set_plan("fake", policy="fast")
            with pytest.raises(BadRequest, match="needs 2 cores"):
                await repository.set_plan("fake", plan="<2,1,2>")
            await repository.set_cores("fake", [CPU])
            assert runtime.planning.topology.cpu_ids() == (CPU,)
        finally:
            await repository.close()
        assert pools.made[0].reconfigures == []  # every plan had the one instance on CPU
        assert pools.spares == [((1, (CPU,)),)]  # the layouts of the policy's plans
        assert runtime.switches == ()

    asyncio.run(main())


@pytest.mark.parametrize("most", [None, 2])
def test_workers_that_cannot_move_are_kept_within_max_workers(
    pools: FakePools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, most: int | None
) -> None:
    cpus = tuple(sorted(os.sched_getaffinity(0))[:2])
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    # Both cores as one instance are fastest at batches 1 and 2, one instance on each core at
    # 3 and 4: the optimal plans need 3 workers that cannot move.
    cells = {(1, 1): 10.0, (1, 2): 12.0, (1, 4): 20.0, (2, 1): 6.0, (2, 2): 9.0, (2, 4): 16.0}
    stats = {cell: CellStats(ms, ms, ms, 0.0, 5) for cell, ms in cells.items()}
    path = tmp_path / "two.json"
    save_profile(Profile("fake", "0" * 64, {}, "test", stats), path)

    async def main() -> None:
        repository = repository_of(pools, monkeypatch)
        monkeypatch.setattr(
            repository, "_resolve", lambda config, files_anywhere: FakeSource(moves_in_place=False)
        )
        config = dataclasses.replace(config_of(path, max_workers=most), cores=cpus)
        runtime = await repository.register_model(config)
        try:
            described = runtime.describe()
        finally:
            await repository.close()
        fat = (2, cpus)
        if most is None:  # 2 x 2 cores: room for the three
            assert set(pools.spares[-1]) == {fat, (1, cpus[:1]), (1, cpus[1:])}
            assert described["max_workers"] == 4 and described["workers_kept"] is None
            return
        # Two: the fat instance alone (one instance per core would need both, and three in
        # all), its plans 1.33x slower at batch 4 than the optimal one.
        assert pools.spares[-1] == (fat,)
        assert runtime.plan.layout == (fat,)
        assert described["max_workers"] == 2
        assert described["workers_kept"] == {
            "kept": 1, "needed": 3, "max_slowdown": round(16.0 / 12.0, 4),
            "mean_slowdown": round((1 + 1 + 12.5 / 12.0 + 16.0 / 12.0) / 4, 4),
        }  # fmt: skip

    asyncio.run(main())


def test_a_pool_that_fails_to_start_fails_the_registration(
    pools: FakePools, profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        repository = repository_of(pools, monkeypatch)
        pools.fail_starts = 1
        with pytest.raises(BadRequest, match="cannot serve model 'fake'.*failed to load"):
            await repository.register_model(config_of(profile))
        assert repository.runtimes() == []

    asyncio.run(main())


@pytest.mark.parametrize(
    ("setting", "cores", "contention"),
    [
        (ProfileKindSetting.AUTO, 2, True),
        (ProfileKindSetting.AUTO, 1, False),
        (ProfileKindSetting.AUTO, 16, False),
        (ProfileKindSetting.ISOLATED, 2, False),
        (ProfileKindSetting.CONTENTION, 16, True),
    ],
)
def test_a_model_is_profiled_by_the_kind_its_setting_and_cores_make(
    setting: ProfileKindSetting, cores: int, contention: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []

    class Profiled(Exception):
        pass

    async def serving_table(*args: object, contention: bool, **kwargs: object) -> None:
        asked.append(contention)
        raise Profiled  # what follows the profile is not this test's

    monkeypatch.setattr(repository_module, "serving_table", serving_table)
    monkeypatch.setattr(
        repository_module, "model_topology", lambda ids: synthetic_topology(1, cores)
    )
    repository = Repository(RepositoryDefaults(), profile_kind=setting)
    monkeypatch.setattr(repository, "_resolve", lambda config, files_anywhere: FakeSource())
    with pytest.raises(Profiled):
        asyncio.run(repository.register_model(config_of(None)))
    assert asked == [contention]
