"""`PackratReplica` as Ray Serve drives it, without Ray: its health is its models' readiness
(Ray replaces a replica whose `check_health` raises), and its shutdown hook `__del__` drains:
requests it had accepted are answered before the workers stop, and new ones are refused.

The replica is built by its own constructor, with the launch steps that start real workers
(`prepare`, `open_repository`) swapped for a repository over fake instance pools."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import packrat.ray.replica as replica_module
from packrat.controller.batching import BatchingConfig
from packrat.controller.plan_choice import ChoiceKind, PlanChoice
from packrat.pool import EngineConfig, EngineState
from packrat.profiler.profile_file import Profile, save_profile
from packrat.ray.replica import PackratReplica
from packrat.server.errors import Unavailable
from packrat.server.launch_config import LaunchConfig
from packrat.server.repository import ModelConfig, Repository, RepositoryDefaults
from packrat.server.runtime import ModelRuntime, RuntimeState
from packrat.stats import CellStats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from fake_pool import FakePools, FakeSource  # noqa: E402
from server_fakes import FakeModel, FakeRepository  # noqa: E402

T = TypeVar("T")

# Outside Ray, the garbage collector also calls the async `__del__` of a collected replica,
# making a coroutine no one awaits; the tests await it themselves.
pytestmark = pytest.mark.filterwarnings(
    "ignore:coroutine 'PackratReplica.__del__' was never awaited:RuntimeWarning"
)

CPU = min(os.sched_getaffinity(0))
BATCH_MS = 200.0  # every batch takes this long: a shutdown lands while requests are in flight


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(main, timeout=30))


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    cells = {(1, b): CellStats(BATCH_MS, BATCH_MS, BATCH_MS, 0.0, 5) for b in (1, 2, 4)}
    path = tmp_path / "fake.json"
    save_profile(Profile("fake", "0" * 64, {}, "test", cells), path)
    return path


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePools:
    monkeypatch.setenv("PACKRAT_CACHE_DIR", str(tmp_path / "cache"))
    return FakePools(lambda threads, batch: BATCH_MS, sleep=True)


async def serving(
    pools: FakePools, profile: Path, monkeypatch: pytest.MonkeyPatch, *names: str
) -> Repository:
    """A repository serving one model per name over `pools` (batches of up to 4)."""
    repository = Repository(
        RepositoryDefaults(), engine_config=EngineConfig(batch_timeout_s=30.0), pool_factory=pools
    )
    monkeypatch.setattr(repository, "_resolve", lambda config, files_anywhere: FakeSource())
    for name in names:
        config = ModelConfig(
            "fake", name=name, cores=(CPU,),
            batching=BatchingConfig(max_batch_size=4, max_batch_delay_ms=5.0),
            profile=profile, backend="torch", precision="fp32",
            choice=PlanChoice(ChoiceKind.FIXED),
        )  # fmt: skip
        await repository.register_model(config)
    return repository


async def replica_over(
    repository: Repository | FakeRepository, monkeypatch: pytest.MonkeyPatch
) -> PackratReplica:
    """A replica built as Ray builds it (`__new__`, then its async `__init__`), serving
    `repository`, without a metrics server."""

    async def opened(*args: object) -> Repository | FakeRepository:
        return repository

    monkeypatch.setattr(replica_module, "prepare", lambda config, err: None)
    monkeypatch.setattr(replica_module, "open_repository", opened)
    replica = PackratReplica.__new__(PackratReplica)
    await replica.__init__(LaunchConfig(), serve_metrics=False)
    return replica


def test_a_replica_whose_models_are_all_ready_is_healthy(
    pools: FakePools, profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        repository = await serving(pools, profile, monkeypatch, "a", "b")
        replica = await replica_over(repository, monkeypatch)
        try:
            assert all(model.ready for model in repository.models())
            assert await replica.check_health() is None
        finally:
            await replica.__del__()

    run(main())


def test_a_model_still_starting_makes_the_replica_unhealthy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        booting = FakeModel("booting", ready=False)
        replica = await replica_over(FakeRepository(FakeModel("up"), booting), monkeypatch)
        with pytest.raises(RuntimeError, match=r"^models not ready: booting$"):
            await replica.check_health()
        booting.ready = True
        await replica.check_health()  # healthy once it is up

    run(main())


def test_a_failed_model_makes_the_replica_unhealthy(
    pools: FakePools, profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        repository = await serving(pools, profile, monkeypatch, "good", "bad")
        replica = await replica_over(repository, monkeypatch)
        try:
            bad = repository.get("bad")
            pool = pools.made[1]
            # Its one instance dies and cannot be replaced: the pool is broken, the model failed.
            pool.lose_next, pool.fail_starts = {0}, 1
            with pytest.raises(Unavailable):
                await bad.infer(1.0)
            while pool.state is EngineState.DEGRADED:
                await asyncio.sleep(0.001)
            assert bad.state is RuntimeState.FAILED and repository.get("good").ready
            with pytest.raises(RuntimeError, match=r"^models not ready: bad$"):
                await replica.check_health()
        finally:
            await replica.__del__()

    run(main())


def test_shutdown_answers_accepted_requests_then_stops_workers_and_refuses_new_ones(
    pools: FakePools, profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        repository = await serving(pools, profile, monkeypatch, "fake")
        replica = await replica_over(repository, monkeypatch)
        runtime: ModelRuntime = repository.get("fake")
        pool = pools.made[0]
        # Six requests: a batch of 4 computing when the shutdown begins, 2 queued behind it.
        accepted = [asyncio.create_task(runtime.infer(float(r))) for r in range(6)]
        while not pool.batches:
            await asyncio.sleep(0.001)
        answered_when_closed: list[bool] = []
        close = pool.close

        def close_after_checking() -> None:
            answered_when_closed.append(all(task.done() for task in accepted))
            close()

        monkeypatch.setattr(pool, "close", close_after_checking)
        shutdown = asyncio.create_task(replica.__del__())
        while runtime.state is RuntimeState.RUNNING:
            await asyncio.sleep(0.001)
        with pytest.raises(Unavailable, match="shutting down"):
            await runtime.infer(100.0)
        assert not any(task.done() for task in accepted[4:])  # still queued: not dropped
        assert await asyncio.gather(*accepted) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        await shutdown
        assert pool.batches == [(4,), (2,)]  # the refused request never reached a worker
        assert answered_when_closed == [True] and pool.state is EngineState.CLOSED
        assert runtime.state is RuntimeState.STOPPED and repository.models() == []

    run(main())
