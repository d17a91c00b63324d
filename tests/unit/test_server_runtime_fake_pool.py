"""The served model's runtime over a fake instance pool (no processes): batches split by the
profile, plans that follow the load or are pinned, lost instances, failed switches, stop."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from packrat.controller.batching import BatchingConfig
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.planning import Planning
from packrat.controller.policy import PolicyConfig, PolicyKind
from packrat.errors import WorkerError
from packrat.optimizer.table import LatencyTable
from packrat.pool import EngineState
from packrat.server.errors import BadRequest, InferenceFailed, Unavailable
from packrat.server.runtime import BatchRecord, ModelRuntime, RuntimeState, Switch
from packrat.topology import synthetic_topology
from packrat.types import Plan, parse_plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from fake_pool import MODEL_ERROR, FakePool, FakeSource  # noqa: E402

T = TypeVar("T")

# On 2 cores: one 2-thread instance for batches of 1 and 2, two 1-thread ones for 3 and 4.
TABLE = LatencyTable.from_cells(
    {(1, 1): 50.0, (1, 2): 70.0, (1, 4): 120.0, (2, 1): 30.0, (2, 2): 45.0, (2, 4): 100.0}
).interpolated()
PLANNING = Planning(synthetic_topology(sockets=1, cores_per_socket=2), TABLE, 4)
FAT, THIN = PLANNING.optimal(1), PLANNING.optimal(4)  # <1,2,1> and <2,1,2>
DELAY_MS = 20.0  # a batch short of 4 waits this long


def latency_ms(threads: int, batch: int) -> float:
    ms = TABLE.get(threads, batch)
    assert ms is not None
    return ms


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(main, timeout=30))


def runtime_of(
    plan: Plan,
    policy: PolicyKind | None = None,
    *,
    pool_size: int | None = None,
    sleep: bool = False,
    estimator: EstimatorConfig | None = None,
) -> tuple[ModelRuntime, FakePool]:
    pool = FakePool(plan, latency_ms, pool_size=pool_size, sleep=sleep)
    config = None if policy is None else PolicyConfig(policy, estimator or EstimatorConfig())
    runtime = ModelRuntime(
        "fake",
        "1",
        FakeSource(),
        plan,
        TABLE,
        batching=BatchingConfig(max_batch_size=4, max_batch_delay_ms=DELAY_MS),
        planning=PLANNING,
        policy=config,
        pool=pool,
    )
    return runtime, pool


async def batch(runtime: ModelRuntime, *requests: float) -> list[Any]:
    """One batch of `requests` (4 form a batch at once; fewer, after the delay)."""
    return list(await asyncio.gather(*(runtime.infer(r) for r in requests)))


async def wait_until_replaced(runtime: ModelRuntime) -> None:
    while runtime.degraded:
        await asyncio.sleep(0.001)


def test_batches_are_split_by_the_profile_and_recorded() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(THIN)
        records: list[BatchRecord] = []
        runtime.add_listener(records.append)
        await runtime.start()
        try:
            assert runtime.ready and runtime.state is RuntimeState.RUNNING
            assert await batch(runtime, 1.0, 2.0, 3.0, 4.0) == [2.0, 4.0, 6.0, 8.0]
            output, compute_s = await runtime.infer_timed(5.0)
            assert (output, compute_s) == (10.0, pytest.approx(0.05))
        finally:
            await runtime.stop()
        assert pool.batches == [(2, 2), (1, 0)]
        assert [(r.sizes, r.compute_s) for r in records] == [
            ((2, 2), (0.07, 0.07)), ((1, 0), (0.05, 0.0)),
        ]  # fmt: skip
        assert runtime.last_batch_sizes == (1, 0)
        assert runtime.busy_s == pytest.approx((0.12, 0.07))
        assert (runtime.batches_total, runtime.requests_total) == (2, 5)
        assert runtime.split(3) == ([2, 1], 70.0)
        assert pool.state is EngineState.CLOSED and runtime.state is RuntimeState.STOPPED

    run(main())


def test_the_auto_policy_switches_plans_at_each_batch() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(THIN, PolicyKind.AUTO, pool_size=PLANNING.pool_size())
        switches: list[Switch] = []
        runtime.add_switch_listener(switches.append)
        await runtime.start()
        try:
            assert await batch(runtime, 1.0) == [2.0]
            assert runtime.plan == FAT
            assert await batch(runtime, 1.0, 2.0, 3.0, 4.0) == [2.0, 4.0, 6.0, 8.0]
            assert runtime.plan == THIN
        finally:
            await runtime.stop()
        assert pool.reconfigures == [FAT, THIN] and pool.batches == [(1,), (2, 2)]
        assert [(s.old_plan, s.new_plan, s.reason) for s in switches] == [
            ("<2,1,2>", "<1,2,1>", "batch of 1"),
            ("<1,2,1>", "<2,1,2>", "batch of 4"),
        ]
        assert runtime.switches == tuple(switches) and runtime.switches_total == 2
        assert runtime.switch_log()[0]["workers_retuned"] == 1

    run(main())


def test_a_plan_with_the_same_instances_is_only_replanned() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(
            THIN, PolicyKind.FOLLOW, pool_size=2, estimator=EstimatorConfig.per_batch()
        )
        await runtime.start()
        try:
            await batch(runtime, 1.0)  # the estimate drops to 1: <1,2,1>, a switch
            await batch(runtime, 1.0, 2.0)  # to 2: <1,2,2>, the same instance
        finally:
            await runtime.stop()
        assert pool.reconfigures == [FAT] and pool.replans == [PLANNING.optimal(2)]
        assert runtime.plan.describe() == "<1,2,2>" and runtime.switches_total == 1
        assert runtime.switches[0].reason == "estimated batch size 1"

    run(main())


def test_pin_release_and_move_change_plans_between_batches() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(THIN, PolicyKind.AUTO, pool_size=2)
        await runtime.start()
        try:
            fat = await runtime.pin(parse_plan("<1,2,4>"))
            assert fat.layout == FAT.layout and runtime.policy == "pinned"
            await batch(runtime, 1.0, 2.0, 3.0, 4.0)
            assert runtime.plan == fat  # pinned: the load does not move it
            with pytest.raises(BadRequest, match="cannot run plan <3,1,1>"):
                await runtime.pin(parse_plan("<3,1,1>"))

            assert await runtime.release(PolicyKind.AUTO) == THIN
            assert runtime.policy == "auto"
            await batch(runtime, 1.0)
            assert runtime.plan == FAT

            one_core = PLANNING.on(synthetic_topology(sockets=1, cores_per_socket=1))
            assert (await runtime.move(one_core)).describe() == "<1,1,4>"
            assert runtime.planning is one_core and pool.reserves == [1]
            assert pool.reserved_spares == [one_core.layouts()]  # for workers that cannot move
            assert await batch(runtime, 1.0, 2.0) == [2.0, 4.0]
            assert runtime.plan.describe() == "<1,1,4>"  # the only plan on one core
        finally:
            await runtime.stop()
        reasons = [s.reason for s in runtime.switches]
        assert reasons == ["pinned", "policy auto", "batch of 1", "cores 0"]
        described = runtime.describe()
        assert (described["policy"], described["switches_total"]) == ("auto", 4)

    run(main())


def test_a_model_error_fails_only_its_own_sub_batch() -> None:
    async def main() -> None:
        runtime, _ = runtime_of(THIN)
        await runtime.start()
        try:
            requests = (1.0, MODEL_ERROR, 3.0, 4.0)
            results = await asyncio.gather(
                *(runtime.infer(r) for r in requests), return_exceptions=True
            )
        finally:
            await runtime.stop()
        assert isinstance(results[0], InferenceFailed) and isinstance(results[1], InferenceFailed)
        assert "ModelError: bad request" in str(results[0])
        assert results[2:] == [6.0, 8.0]

    run(main())


def test_a_lost_instance_is_replaced_before_the_next_batch() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(THIN)
        restarts: list[int] = []
        runtime.add_restart_listener(restarts.append)
        await runtime.start()
        try:
            pool.lose_next = {1}
            requests = (1.0, 2.0, 3.0, 4.0)
            results = await asyncio.gather(
                *(runtime.infer(r) for r in requests), return_exceptions=True
            )
            assert results[:2] == [2.0, 4.0]
            for lost in results[2:]:
                assert isinstance(lost, Unavailable)
                assert "worker 1 died; the instance is being restarted, retry" in str(lost)
            # The next batch waits for the replacement: the fake refuses batches while degraded.
            assert await batch(runtime, *requests) == [2.0, 4.0, 6.0, 8.0]
            await wait_until_replaced(runtime)
            assert runtime.ready and runtime.restarts_total == 1 and restarts == [1]
            assert runtime.describe()["instances_restarted"] == 1
        finally:
            await runtime.stop()

    run(main())


def test_a_lost_instance_that_cannot_be_replaced_fails_the_model() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(THIN)
        await runtime.start()
        try:
            pool.lose_next, pool.fail_starts = {0}, 1
            await asyncio.gather(
                *(runtime.infer(r) for r in (1.0, 2.0, 3.0, 4.0)), return_exceptions=True
            )
            while pool.state is EngineState.DEGRADED:
                await asyncio.sleep(0.001)
            assert not runtime.ready and runtime.state is RuntimeState.FAILED
            assert runtime.failure == "its instance pool is broken"
            with pytest.raises(Unavailable, match="its instance pool is broken"):
                await runtime.infer(1.0)
        finally:
            await runtime.stop()

    run(main())


def test_a_failed_switch_keeps_the_old_plan_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`auto` wants two instances for a batch of 4 on a pool of one worker, whose start
    fails: that batch and the next run on the old plan, and no start is tried again within
    SPAWN_RETRY_S; a pin, asked from outside, still starts one."""

    async def main() -> None:
        runtime, pool = runtime_of(FAT, PolicyKind.AUTO)
        await runtime.start()
        try:
            pool.fail_starts = 1
            with caplog.at_level(logging.ERROR):
                for _ in range(3):
                    assert await batch(runtime, 1.0, 2.0, 3.0, 4.0) == [2.0, 4.0, 6.0, 8.0]
            assert "switching plans (batch of 4) failed" in caplog.text
            assert pool.spawn_attempts == 2  # the pool's start, and one switch
            assert pool.batches == [(4,)] * 3 and runtime.plan == FAT
            assert runtime.switches == () and runtime.ready
            assert await runtime.pin(THIN) == THIN
            assert pool.spawn_attempts == 3 and runtime.plan == THIN
        finally:
            await runtime.stop()

    run(main())


def test_a_pin_whose_workers_fail_to_start_raises_and_changes_nothing() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(FAT, PolicyKind.FIXED)
        await runtime.start()
        try:
            pool.fail_starts = 1
            with pytest.raises(WorkerError, match="failed to load"):
                await runtime.pin(THIN)
            assert runtime.plan == FAT and runtime.policy == "fixed" and runtime.ready
            assert await batch(runtime, 1.0) == [2.0]
        finally:
            await runtime.stop()

    run(main())


def test_stop_drains_queued_and_running_requests() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(THIN, sleep=True)
        await runtime.start()
        pending = [asyncio.ensure_future(runtime.infer(float(r))) for r in range(6)]
        while runtime.in_flight < 4:
            await asyncio.sleep(0.001)
        assert runtime.queue_depth == 2
        await runtime.stop()
        assert [p.result() for p in pending] == [2.0 * r for r in range(6)]
        assert pool.batches == [(2, 2), (1, 1)] and pool.state is EngineState.CLOSED
        assert runtime.state is RuntimeState.STOPPED and not runtime.ready
        with pytest.raises(Unavailable, match="it has stopped"):
            await runtime.infer(1.0)

    run(main())


def test_a_pool_that_fails_to_start_leaves_the_model_stopped() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(THIN)
        pool.fail_starts = 1
        with pytest.raises(WorkerError, match="starting the pool failed"):
            await runtime.start()
        assert pool.state is EngineState.CLOSED and runtime.state is RuntimeState.STOPPED

    run(main())


def test_describe_shows_the_pools_plan_and_workers() -> None:
    async def main() -> None:
        runtime, pool = runtime_of(THIN, PolicyKind.AUTO, pool_size=2)
        await runtime.start()
        try:
            described = runtime.describe()
        finally:
            await runtime.stop()
        assert described["plan"]["describe"] == "<2,1,2>"
        assert described["plan"]["predicted_latency_ms"] == 70.0
        assert [i["pid"] for i in described["instances"]] == pool.pids
        assert [i["rss_bytes"] for i in described["instances"]] == [None, None]
        assert (described["policy"], described["split"]) == ("auto", "profile")
        assert described["batching"]["max_batch_size"] == 4
        assert described["input_spec"] is None  # the fake's examples are not tensors

    run(main())
