"""`Engine.run_split_on_loop`: batches whose replies the event loop waits for itself, with the
same failure contract as `run_split` (a lost worker fails only its sub-batch), a loop that is
never blocked while the instances compute, and pipes that stay in step."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from packrat.errors import WorkerError
from packrat.pool import Engine, EngineConfig, EngineState
from packrat.types import InstanceSpec, Plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import pool_handlers  # noqa: E402

pytestmark = pytest.mark.slow

CPUS = sorted(os.sched_getaffinity(0))
SLOW = pool_handlers.SLOW_REQUEST_MS  # a request of this value takes as many ms


def two_instances() -> Plan:
    instances = (InstanceSpec(1, 1, (CPUS[0],)), InstanceSpec(1, 1, (CPUS[-1],)))
    return Plan(cores=2, batch=2, latency_ms=0.0, instances=instances)


def engine_of(weights_dir: Path, **config: float) -> Engine:
    return Engine(
        pool_handlers.ScriptedSource(),
        two_instances(),
        EngineConfig(weights_dir=weights_dir, **config),
    )


async def ticks_while(work: asyncio.Future[object] | asyncio.Task[object]) -> int:
    """How many 10 ms sleeps the loop ran while `work` was not done."""
    ticks = 0
    while not work.done():
        await asyncio.sleep(0.01)
        ticks += 1
    return ticks


def test_outputs_and_the_loop_stays_free(tmp_path: Path) -> None:
    async def main(engine: Engine) -> None:
        first, second = await engine.run_split_on_loop([1.0, 2.0], [1, 1])
        assert (first.outputs, second.outputs) == ((2.0,), (4.0,))
        assert (first.start, first.stop, second.start, second.stop) == (0, 1, 1, 2)
        (only,) = await engine.run_split_on_loop([3.0, 4.0], [2, 0])  # one instance idle
        assert only.instance == 0 and only.outputs == (6.0, 8.0)
        slow = asyncio.ensure_future(engine.run_split_on_loop([1.0, SLOW], [1, 1]))
        ticks = await ticks_while(slow)
        assert ticks >= 50, f"the loop ran only {ticks} ticks during a 1 s batch"
        assert [p.outputs for p in slow.result()] == [(2.0,), (2 * SLOW,)]
        with pytest.raises(ValueError, match="do not add up"):
            await engine.run_split_on_loop([1.0], [1, 1])

    with engine_of(tmp_path) as engine:
        asyncio.run(main(engine))


def test_a_killed_worker_loses_only_its_sub_batch(tmp_path: Path) -> None:
    with engine_of(tmp_path) as engine:
        victim = engine.pids[1]
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        first, second = asyncio.run(engine.run_split_on_loop([1.0, 2.0], [1, 1]))
        assert time.monotonic() - started < 5.0
        assert first.outputs == (2.0,) and not first.lost
        assert second.lost and second.error is not None
        assert second.error.endswith("died with exit code -9")
        assert engine.state is EngineState.DEGRADED and engine.lost == [1]
        with pytest.raises(WorkerError, match="call replace_lost"):
            asyncio.run(engine.run_split_on_loop([1.0, 2.0], [1, 1]))
        assert engine.replace_lost() == [1]
        parts = asyncio.run(engine.run_split_on_loop([3.0, 4.0], [1, 1]))
        assert [p.outputs for p in parts] == [(6.0,), (8.0,)]


def test_a_hung_worker_times_out(tmp_path: Path) -> None:
    with engine_of(tmp_path, batch_timeout_s=0.5, stop_timeout_s=0.5) as engine:
        started = time.monotonic()
        first, second = asyncio.run(engine.run_split_on_loop([1.0, 20 * SLOW], [1, 1]))
        assert time.monotonic() - started < 3.0
        assert first.outputs == (2.0,)
        assert (
            second.lost
            and second.error is not None
            and "did not reply within 0.5 s" in second.error
        )
        assert engine.replace_lost() == [1]
        parts = asyncio.run(engine.run_split_on_loop([1.0, 2.0], [1, 1]))
        assert [p.outputs for p in parts] == [(2.0,), (4.0,)]


def test_a_cancelled_caller_leaves_the_pipes_in_step(tmp_path: Path) -> None:
    async def main(engine: Engine) -> None:
        call = asyncio.ensure_future(engine.run_split_on_loop([5.0, SLOW], [1, 1]))
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The batch ran on; the next one waits for it and gets its own outputs, not its.
        parts = await engine.run_split_on_loop([7.0, 8.0], [1, 1])
        assert [p.outputs for p in parts] == [(14.0,), (16.0,)]

    with engine_of(tmp_path) as engine:
        asyncio.run(main(engine))
        assert engine.state is EngineState.RUNNING


def test_a_call_in_a_thread_holding_the_engine_goes_first(tmp_path: Path) -> None:
    with engine_of(tmp_path) as engine:
        holder = threading.Thread(target=engine.run_split, args=([1.0, SLOW], [1, 1]))
        holder.start()
        time.sleep(0.2)  # it holds the engine now, for about 0.8 s more

        async def main() -> list[tuple[object, ...]]:
            call = asyncio.ensure_future(engine.run_split_on_loop([3.0, 4.0], [1, 1]))
            ticks = await ticks_while(call)
            assert ticks >= 30, "the loop waited for the engine instead of a thread"
            return [p.outputs for p in call.result()]

        started = time.monotonic()
        assert asyncio.run(main()) == [(6.0,), (8.0,)]
        assert time.monotonic() - started > 0.5, "it ran after the holder's batch"
        holder.join()
