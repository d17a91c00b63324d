"""A served model after a failure inside the server: a switch whose workers fail to start, a
batch loop that dies. Real worker processes, a handler without a model (pool_handlers)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from packrat.controller.batching import BatchingConfig
from packrat.controller.planning import Planning
from packrat.controller.policy import PolicyConfig, PolicyKind
from packrat.errors import WorkerError
from packrat.pool import EngineConfig
from packrat.server.errors import Unavailable
from packrat.server.runtime import ModelRuntime, RuntimeState
from packrat.topology import read_topology
from packrat.types import InstanceSpec, Plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import pool_handlers  # noqa: E402

pytestmark = pytest.mark.slow

T = TypeVar("T")

CPUS = sorted(os.sched_getaffinity(0))
ENGINE = EngineConfig(share_weights=False, start_timeout_s=120.0, batch_timeout_s=60.0)
LONG_MS = 10_000.0  # batches form by size in these tests, never by delay


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(main, timeout=150))


def plan_of(count: int) -> Plan:
    """`count` one-thread instances of batch 1, on this process's CPUs in turn."""
    instances = tuple(InstanceSpec(1, 1, (CPUS[k % len(CPUS)],)) for k in range(count))
    return Plan(cores=count, batch=count, latency_ms=0.0, instances=instances)


def runtime_of(scripts: Path, plan: Plan) -> ModelRuntime:
    """A model doubling numbers on `plan`, its workers booted by the scripts in `scripts`,
    batches of 3 formed by size; "fixed" policy, so that only `pin` changes plans."""
    return ModelRuntime(
        "boot",
        "1",
        pool_handlers.BootScriptSource(str(scripts)),
        plan,
        batching=BatchingConfig(max_batch_size=3, max_batch_delay_ms=LONG_MS),
        engine_config=ENGINE,
        planning=Planning(read_topology(), None, 3),
        policy=PolicyConfig(PolicyKind.FIXED),
    )


def test_a_switch_whose_workers_fail_to_start_keeps_serving_the_old_plan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pinning a plan with two more instances: one fails to load while the other still
    boots. The switch fails and is logged, no worker is left over, the old plan and policy
    stay, and every later request gets its own answer, also after the switch is retried."""
    scripts = tmp_path / "boot"
    scripts.mkdir()
    one, three = plan_of(1), plan_of(3)

    async def answers(runtime: ModelRuntime, requests: list[float]) -> None:
        got = await asyncio.gather(*(runtime.infer(r) for r in requests))
        assert got == [2.0 * r for r in requests]

    async def main() -> None:
        runtime = runtime_of(scripts, one)
        await runtime.start()
        try:
            pids = [i["pid"] for i in runtime.describe()["instances"]]
            (scripts / "a").write_text("fail")
            (scripts / "b").write_text("sleep 5")
            with (
                caplog.at_level(logging.ERROR, logger="packrat.server.runtime"),
                pytest.raises(WorkerError, match="failed to load: ModelError"),
            ):
                await runtime.pin(three)
            assert "switching plans (pinned) failed" in caplog.text
            assert runtime.ready and runtime.state is RuntimeState.RUNNING
            assert runtime.plan == one and runtime.policy == "fixed"
            assert runtime.switches == ()
            assert {p.pid for p in multiprocessing.active_children()} == set(pids)
            await answers(runtime, [float(k) for k in range(6)])

            assert await runtime.pin(three) == three  # workers start now
            assert runtime.plan == three and runtime.policy == "pinned"
            for start in (10, 20, 30):  # batches of 3: one request per instance
                await answers(runtime, [float(start + k) for k in range(3)])
            assert runtime.last_batch_sizes == (1, 1, 1)
        finally:
            await runtime.stop()

    run(main())


def test_a_batch_loop_that_dies_answers_every_request_and_the_model_is_not_ready(
    tmp_path: Path,
) -> None:
    """A bug in the batch loop (here: forming the batch after the first one raises): the
    running batch is answered, every queued request gets 503 at once, later requests are
    refused, and the model says it is not ready and has failed, until it is stopped."""
    scripts = tmp_path / "boot"
    scripts.mkdir()

    async def main() -> None:
        runtime = runtime_of(scripts, plan_of(1))
        batcher = runtime._batcher
        next_batch = batcher._next_batch
        calls = 0

        async def buggy_next_batch() -> Any:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise RuntimeError("a bug in the loop")
            return await next_batch()

        batcher._next_batch = buggy_next_batch  # type: ignore[method-assign]
        await runtime.start()
        try:
            assert runtime.ready
            # The first batch takes 1.5 s (ScriptedHandler sleeps v ms for v >= 1000).
            first = [asyncio.ensure_future(runtime.infer(r)) for r in (1500.0, 1.0, 2.0)]
            while runtime.in_flight < 3:
                await asyncio.sleep(0.005)
            queued = [asyncio.ensure_future(runtime.infer(float(r))) for r in range(3, 8)]
            assert await asyncio.gather(*first) == [3000.0, 2.0, 4.0]
            results = await asyncio.gather(*queued, return_exceptions=True)
            for result in results:
                assert isinstance(result, Unavailable)
                assert "batch loop failed (RuntimeError: a bug in the loop)" in str(result)

            assert not runtime.ready and runtime.state is RuntimeState.FAILED
            described = runtime.describe()
            assert (described["state"], described["ready"]) == ("failed", False)
            assert described["failure"] == "its batch loop failed: RuntimeError: a bug in the loop"
            with pytest.raises(Unavailable, match="its batch loop failed"):
                await runtime.infer(1.0)
        finally:
            await runtime.stop()
        assert runtime.state is RuntimeState.STOPPED

    run(main())


@pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs")
def test_a_policy_switch_whose_workers_fail_is_not_retried_at_every_batch(tmp_path: Path) -> None:
    """`auto` proposes two 1-thread instances for a batch of 2 on a pool of one worker; the
    new worker fails to start. That batch and the next run on the old plan, and the next does
    not start a worker again (each failed start can take up to the start timeout)."""
    from packrat.optimizer import LatencyTable

    scripts = tmp_path / "boot"
    scripts.mkdir()
    # One 2-thread instance for a batch of 1 (9 ms), two 1-thread ones for 2 (10 against 35).
    table = LatencyTable.from_cells({(1, 1): 10.0, (1, 2): 40.0, (2, 1): 9.0, (2, 2): 35.0})
    planning = Planning(read_topology(allowed=set(CPUS[:2])), table, 2)
    fat = planning.optimal(1)
    assert len(fat.instances) == 1 and len(planning.optimal(2).instances) == 2

    async def main() -> None:
        runtime = ModelRuntime(
            "boot",
            "1",
            pool_handlers.BootScriptSource(str(scripts)),
            fat,
            table,
            batching=BatchingConfig(max_batch_size=2, max_batch_delay_ms=LONG_MS),
            engine_config=ENGINE,
            planning=planning,
            policy=PolicyConfig(PolicyKind.AUTO),
        )
        await runtime.start()
        try:
            (scripts / "a").write_text("fail")
            (scripts / "b").write_text("fail")
            for start in (1.0, 3.0):
                got = await asyncio.gather(runtime.infer(start), runtime.infer(start + 1))
                assert got == [2 * start, 2 * start + 2]
            assert runtime.plan.layout == fat.layout and runtime.switches == ()
            assert sorted(p.name for p in scripts.iterdir()) == ["b"]  # one start was tried
        finally:
            await runtime.stop()

    run(main())
