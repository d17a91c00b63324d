"""A served model whose profile is wrong on the cells it runs: its batches correct the cells and
its plans follow (`packrat.server.calibrating`), over a fake pool that computes for the true
latencies."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

import pytest

from packrat.controller.batching import BatchingConfig
from packrat.controller.calibration import CalibrationConfig
from packrat.controller.planning import Planning
from packrat.controller.policy import PolicyConfig, PolicyKind
from packrat.optimizer.table import LatencyTable
from packrat.server.metrics import Metrics
from packrat.server.observe import watch
from packrat.server.runtime import ModelRuntime
from packrat.topology import synthetic_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from fake_pool import FakePool, FakeSource  # noqa: E402

# The profile says one thread runs a batch of 1 faster than two (a cell measured while
# something else ran); truly, one thread takes twice as long.
PROFILED = LatencyTable.from_cells(
    {(1, 1): 40.0, (1, 2): 75.0, (2, 1): 45.0, (2, 2): 60.0}
).interpolated()
TRUE_MS = {(1, 1): 80.0, (1, 2): 150.0, (2, 1): 45.0, (2, 2): 60.0}
PLANNING = Planning(synthetic_topology(sockets=1, cores_per_socket=2), PROFILED, 2)
SAMPLES = 4


def runtime_of(
    calibration: CalibrationConfig | None, planning: Planning = PLANNING
) -> tuple[ModelRuntime, FakePool]:
    first = planning.optimal(1)
    pool = FakePool(first, lambda t, b: TRUE_MS[t, b], pool_size=planning.pool_size())
    source = FakeSource(moves_in_place=planning.max_layouts is None)
    runtime = ModelRuntime(
        "fake", "1", source, first, PROFILED,
        batching=BatchingConfig(max_batch_size=2, max_batch_delay_ms=0.0),
        planning=planning, policy=PolicyConfig(PolicyKind.AUTO), pool=pool,
        calibration=calibration,
    )  # fmt: skip
    return runtime, pool


async def serve_one_by_one(runtime: ModelRuntime, requests: int) -> None:
    for r in range(requests):
        assert await runtime.infer(float(r)) == 2.0 * r


async def replanned(runtime: ModelRuntime) -> None:
    """Until the model plans on the corrected cell (plans are made in a thread)."""
    while runtime.planning.table.get(1, 1) != 80.0:
        await asyncio.sleep(0.001)


def test_batches_correct_the_cell_they_run_on_and_the_plan_follows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert PLANNING.optimal(1).describe() == "<1,1,1>"  # what the wrong profile plans

    async def main() -> ModelRuntime:
        runtime, pool = runtime_of(CalibrationConfig(samples=SAMPLES))
        metrics = Metrics()
        watch(runtime, metrics)
        await runtime.start()
        try:
            await serve_one_by_one(runtime, SAMPLES)
            await replanned(runtime)
            await serve_one_by_one(runtime, 2)
        finally:
            await runtime.stop()
        assert pool.batches[:SAMPLES] == [(1,)] * SAMPLES  # on one thread, at 80 ms
        assert pool.batches[-1] == (1,) and runtime.plan.describe() == "<1,2,1>"
        assert [plan.describe() for plan in pool.reconfigures] == ["<1,2,1>"]
        corrections = metrics.registry.get_sample_value(
            "packrat_profile_corrections_total", {"model": "fake"}
        )
        assert corrections == 1.0
        return runtime

    with caplog.at_level(logging.WARNING, logger="packrat.server.calibrating"):
        runtime = asyncio.run(asyncio.wait_for(main(), timeout=30))
    described = runtime.describe()["calibration"]
    assert described["corrections_total"] == 1
    assert described["corrections"] == [
        {"threads": 1, "batch": 1, "profiled_ms": 40.0, "served_ms": 80.0, "samples": SAMPLES}
    ]
    assert runtime.planning.table.get(1, 1) == 80.0
    assert runtime.split(1) == ([1], 45.0)  # the 2-thread instance, as profiled
    (message,) = [r.getMessage() for r in caplog.records]
    assert "1 threads, batch 1: served in 80.0 ms, profiled 40.0 ms (2.00x" in message
    assert "packrat profile MODEL --fresh" in message


def test_without_calibration_the_wrong_plan_stays() -> None:
    async def main() -> tuple[ModelRuntime, FakePool]:
        runtime, pool = runtime_of(None)
        await runtime.start()
        try:
            await serve_one_by_one(runtime, SAMPLES + 2)
            await asyncio.sleep(0.05)
            await serve_one_by_one(runtime, 2)
        finally:
            await runtime.stop()
        return runtime, pool

    runtime, pool = asyncio.run(asyncio.wait_for(main(), timeout=30))
    assert pool.reconfigures == [] and runtime.plan.describe() == "<1,1,1>"
    assert runtime.describe()["calibration"] is None


def test_workers_that_cannot_move_follow_the_corrected_plans_layouts() -> None:
    # The wrong profile plans one thread per instance (batch 1 on one, 2 on both); corrected,
    # every plan is the one instance on both cores: its spares follow (as OpenVINO's must).
    planning = dataclasses.replace(PLANNING, max_layouts=4)
    cores = planning.topology.cpu_ids()
    assert set(planning.layouts()) == {(1, cores[:1]), (1, cores[1:])}

    async def main() -> tuple[ModelRuntime, FakePool]:
        runtime, pool = runtime_of(CalibrationConfig(samples=SAMPLES), planning)
        await runtime.start()
        try:
            await serve_one_by_one(runtime, SAMPLES)
            await replanned(runtime)
            while not pool.reserved_spares:  # reserved after the new plans are in
                await asyncio.sleep(0.001)
        finally:
            await runtime.stop()
        return runtime, pool

    runtime, pool = asyncio.run(asyncio.wait_for(main(), timeout=30))
    assert pool.reserved_spares == [((2, cores),)]
    assert runtime.planning.layouts() == ((2, cores),)
