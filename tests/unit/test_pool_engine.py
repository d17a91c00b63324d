"""Engine checks that need no worker process: plan validation, call order, arguments."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from packrat.errors import PlanError, TopologyError, WorkerError
from packrat.pool import Engine, EngineState
from packrat.stats import SamplingPolicy
from packrat.types import InstanceSpec, Plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import pool_handlers  # noqa: E402

CPU = min(os.sched_getaffinity(0))
PLAN = Plan(
    cores=2,
    batch=3,
    latency_ms=1.0,
    instances=(InstanceSpec(1, 2, (CPU,)), InstanceSpec(1, 1, (CPU,))),
)


def test_unallocated_plan_is_a_topology_error() -> None:
    plan = Plan(cores=1, batch=2, latency_ms=1.0, instances=(InstanceSpec(1, 2),))
    with pytest.raises(TopologyError, match="allocate"):
        Engine(pool_handlers.ScriptedSource(), plan)


def test_cores_this_process_may_not_use_are_a_topology_error() -> None:
    plan = Plan(cores=1, batch=2, latency_ms=1.0, instances=(InstanceSpec(1, 2, (100_000,)),))
    with pytest.raises(TopologyError, match="100000"):
        Engine(pool_handlers.ScriptedSource(), plan)


def test_empty_plan_is_a_plan_error() -> None:
    with pytest.raises(PlanError):
        Engine(pool_handlers.ScriptedSource(), Plan(cores=1, batch=0, latency_ms=0.0))


def test_calls_before_start_raise_worker_error() -> None:
    engine = Engine(pool_handlers.ScriptedSource(), PLAN)
    assert engine.state is EngineState.NEW
    assert engine.pids == []
    with pytest.raises(WorkerError, match="not running"):
        engine.infer([1.0, 2.0, 3.0])
    with pytest.raises(WorkerError, match="not running"):
        engine.measure_all(SamplingPolicy())


def test_argument_checks() -> None:
    engine = Engine(pool_handlers.ScriptedSource(), PLAN)
    with pytest.raises(ValueError, match="exactly 3 requests"):
        engine.infer([1.0])
    with pytest.raises(ValueError, match="instance"):
        engine.measure(2, 1, SamplingPolicy())


def test_close_without_start_is_idempotent_and_final() -> None:
    engine = Engine(pool_handlers.ScriptedSource(), PLAN)
    engine.close()
    engine.close()
    assert engine.state is EngineState.CLOSED
    with pytest.raises(WorkerError, match="closed"):
        engine.start()


def test_worker_pipes_get_wide_socket_buffers() -> None:
    import multiprocessing
    import socket

    from packrat.pool.process import PIPE_BUFFER_BYTES, widen_socket_buffers

    def send_buffer(fd: int) -> int:
        probe = socket.socket(fileno=fd)
        try:
            return probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        finally:
            probe.detach()  # the connection owns the descriptor

    a, b = multiprocessing.get_context("spawn").Pipe(duplex=True)
    with a, b:
        before = send_buffer(a.fileno())
        widen_socket_buffers(a)
        after = send_buffer(a.fileno())
    with open("/proc/sys/net/core/wmem_max") as f:
        cap = int(f.read())
    # The kernel caps the size asked for at wmem_max (and doubles it for bookkeeping).
    assert after >= min(PIPE_BUFFER_BYTES, cap)
    assert after > before or before >= min(PIPE_BUFFER_BYTES, cap)
