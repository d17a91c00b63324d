"""The worker's command handling, driven in-process (no worker process, no pinning)."""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from packrat.pool.channel import Channel
from packrat.pool.messages import (
    BatchDone,
    BatchFailed,
    Describe,
    Measure,
    Measured,
    MeasureFailed,
    RunBatch,
    Stop,
    WorkerInfo,
)
from packrat.pool.worker import handle_command, measure_inference, send_reply, serve
from packrat.stats import SamplingPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import pool_handlers  # noqa: E402

INFO = WorkerInfo(pid=1, threads=1, interop_threads=1, affinity_by_thread={1: frozenset({0})})


def _describe() -> WorkerInfo:
    return INFO


def _handler() -> pool_handlers.ScriptedHandler:
    return pool_handlers.ScriptedHandler(sleep_ms=0.0)


def test_run_batch_returns_outputs_in_order() -> None:
    reply = handle_command(_handler(), RunBatch(7, (1.0, 2.0, 3.0)), _describe)
    assert isinstance(reply, BatchDone)
    assert (reply.batch_id, reply.outputs) == (7, (2.0, 4.0, 6.0))


def test_run_batch_reports_the_handlers_time() -> None:
    reply = handle_command(
        pool_handlers.ScriptedHandler(sleep_ms=30.0), RunBatch(1, (1.0,)), _describe
    )
    assert isinstance(reply, BatchDone)
    assert 0.030 <= reply.compute_s < 5.0


def test_handler_error_becomes_batch_failed() -> None:
    reply = handle_command(_handler(), RunBatch(8, (1.0, -2.0)), _describe)
    assert reply == BatchFailed(8, "ValueError", "negative request -2.0")


def test_describe_uses_the_describer() -> None:
    assert handle_command(_handler(), Describe(), _describe) == INFO


def _fake_clock(step_s: float) -> Iterator[float]:
    now = 0.0
    while True:
        yield now
        now += step_s


def test_measure_inference_times_until_the_policy_stops() -> None:
    calls: list[int] = []

    class CountingHandler(pool_handlers.ScriptedHandler):
        def inference(self, batch: object) -> object:
            calls.append(1)
            return super().inference(batch)

    clock = _fake_clock(0.002)
    policy = SamplingPolicy(warmup_runs=3, min_runs=5, max_runs=9, rel_ci=0.5)
    samples = measure_inference(CountingHandler(0.0), 4, policy, clock=lambda: next(clock))
    # A constant latency has a zero-width CI: stop as soon as min_runs are in.
    assert samples == pytest.approx([2.0] * 5)
    assert len(calls) == 3 + 5


def test_measure_inference_respects_max_runs() -> None:
    # Runs alternate between 1 ms and 10 ms: the CI never gets within 1%.
    times = iter([0.0] + [t for i in range(100) for t in (i, i + 0.001 + 0.009 * (i % 2))])
    policy = SamplingPolicy(warmup_runs=0, min_runs=2, max_runs=4, rel_ci=0.01)
    samples = measure_inference(_handler(), 1, policy, clock=lambda: next(times))
    assert samples == pytest.approx([1.0, 10.0, 1.0, 10.0])


def test_measure_failure_becomes_measure_failed() -> None:
    class NoExamples(pool_handlers.ScriptedHandler):
        def example_requests(self, batch_size: int) -> list[object]:
            raise RuntimeError("no input spec")

    reply = handle_command(NoExamples(0.0), Measure(2, SamplingPolicy()), _describe)
    assert reply == MeasureFailed("RuntimeError", "no input spec")


def test_measure_reply() -> None:
    policy = SamplingPolicy(warmup_runs=0, min_runs=2, max_runs=3)
    reply = handle_command(_handler(), Measure(2, policy), _describe)
    assert isinstance(reply, Measured)
    assert 2 <= len(reply.samples_ms) <= 3


def test_unpicklable_outputs_become_batch_failed() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    send_reply(Channel(left), BatchDone(4, (lambda: None,)))
    reply = Channel(right).recv_reply()
    assert isinstance(reply, BatchFailed)
    assert reply.batch_id == 4
    assert "cannot be pickled" in reply.message


def test_serve_answers_in_order_and_returns_on_stop() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    engine_end = Channel(left)
    server = threading.Thread(target=serve, args=(_handler(), Channel(right), _describe))
    server.start()
    engine_end.send(RunBatch(0, (1.0,)))
    engine_end.send(RunBatch(1, (-1.0,)))
    engine_end.send(Describe())
    engine_end.send(Stop())
    done = engine_end.recv_reply()
    assert isinstance(done, BatchDone) and (done.batch_id, done.outputs) == (0, (2.0,))
    assert isinstance(engine_end.recv_reply(), BatchFailed)
    assert engine_end.recv_reply() == INFO
    server.join(timeout=10)
    assert not server.is_alive()


def test_serve_returns_when_the_engine_goes_away() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    server = threading.Thread(target=serve, args=(_handler(), Channel(right), _describe))
    server.start()
    left.close()
    server.join(timeout=10)
    assert not server.is_alive()


class _RuntimeHandler(pool_handlers.ScriptedHandler):
    """A handler whose runtime has its own threads (as ONNX Runtime's and OpenVINO's)."""

    computes_with_torch = False

    def __init__(self) -> None:
        super().__init__(sleep_ms=0.0)
        self.threads_set: list[int] = []

    def set_threads(self, threads: int) -> None:
        self.threads_set.append(threads)


def test_retuning_a_runtime_handler_gives_it_the_threads_and_torch_one() -> None:
    """torch only stacks and splits tensors beside another runtime: a pool of its own would
    spin on the cores the runtime computes on."""
    import os

    import torch

    from packrat.pool.worker import retune_self

    cpus = tuple(sorted(os.sched_getaffinity(0)))
    before = torch.get_num_threads()
    try:
        runtime = _RuntimeHandler()
        retune_self(runtime, 2, cpus)
        assert (runtime.threads_set, torch.get_num_threads()) == ([2], 1)
        retune_self(_handler(), 2, cpus)  # a torch model computes on torch's threads
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        os.sched_setaffinity(0, cpus)
