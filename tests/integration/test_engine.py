"""The engine with real worker processes: results, pinning, failures, process hygiene.

CPUs are taken cyclically from this process's affinity so the tests run on any machine; on one
or two CPUs some instances share a CPU, which the engine allows.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import pytest
import torch

from packrat.errors import WorkerError
from packrat.pool import Engine, EngineConfig, EngineState
from packrat.pool.affinity import affinity_of_process, child_pids, process_is_gone
from packrat.pool.weights import ensure_weights_file, weights_file
from packrat.stats import SamplingPolicy
from packrat.types import InstanceSpec, Plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import pool_handlers  # noqa: E402

pytestmark = pytest.mark.slow

CPUS = sorted(os.sched_getaffinity(0))
QUICK = SamplingPolicy(warmup_runs=1, min_runs=3, max_runs=5, max_time_s=2.0)


def cpu(i: int) -> int:
    return CPUS[i % len(CPUS)]


def plan_of(*instances: InstanceSpec) -> Plan:
    return Plan(
        cores=sum(i.threads for i in instances),
        batch=sum(i.batch for i in instances),
        latency_ms=0.0,
        instances=instances,
    )


def reference_outputs(source: pool_handlers.LinearSource, requests: list[object]) -> list[object]:
    """What one instance computes, here in the test process with private weights."""
    return source.load().handle(list(requests))


def assert_same(outputs: list[object], expected: list[object]) -> None:
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        assert isinstance(got, torch.Tensor)
        # Tolerance: a multi-threaded GEMM sums in another order than a single-threaded one.
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (got - want).abs().max()  # type: ignore[operator]


def leftover_children(before: set[int]) -> set[int]:
    """Children of this process that were not there before, ignoring multiprocessing's
    resource tracker (started by the first spawn, it lives as long as this process)."""
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    return child_pids(os.getpid()) - before - {tracker}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def linear_engine(weights_dir: Path) -> Iterator[Engine]:
    """Two instances, batches 3 and 2, on (up to) two CPUs, sharing weights."""
    plan = plan_of(InstanceSpec(1, 3, (cpu(0),)), InstanceSpec(1, 2, (cpu(1),)))
    config = EngineConfig(weights_dir=weights_dir, start_timeout_s=120.0, batch_timeout_s=30.0)
    with Engine(pool_handlers.LinearSource(), plan, config) as engine:
        yield engine


def test_outputs_match_one_instance_in_request_order(linear_engine: Engine) -> None:
    source = pool_handlers.LinearSource()
    for seed in (1, 2):
        requests = pool_handlers.make_linear_requests(5, seed=seed)
        assert_same(linear_engine.infer(requests), reference_outputs(source, requests))


def test_weights_are_shared_and_outputs_unchanged(linear_engine: Engine) -> None:
    # The reference above ran with private weights; the workers run on the mapped file.
    assert [r.shared_bytes for r in linear_engine.ready] == [(16 * 4 + 4) * 4] * 2
    assert all(r.load_s > 0 for r in linear_engine.ready)


def test_workers_are_pinned_and_threaded_as_planned(linear_engine: Engine) -> None:
    infos = linear_engine.describe()
    for info, instance, pid in zip(
        infos, linear_engine.plan.instances, linear_engine.pids, strict=True
    ):
        assert info.pid == pid
        assert (info.threads, info.interop_threads) == (instance.threads, 1)
        assert set(info.affinity_by_thread.values()) == {frozenset(instance.cores)}
        # The parent's view from /proc agrees with the worker's own.
        assert affinity_of_process(pid) == info.affinity_by_thread


def test_a_handler_error_names_the_instance_and_the_engine_keeps_serving(
    linear_engine: Engine,
) -> None:
    requests = pool_handlers.make_linear_requests(5)
    requests[4] = torch.zeros(3)  # the wrong shape, in instance 1's sub-batch
    with pytest.raises(
        WorkerError, match=r"instance 1 \(pid \d+, cores \[\d+\]\) failed: RuntimeError"
    ) as info:
        linear_engine.infer(requests)
    assert "instance 0" not in str(info.value)
    assert linear_engine.state is EngineState.RUNNING
    good = pool_handlers.make_linear_requests(5)
    assert_same(linear_engine.infer(good), reference_outputs(pool_handlers.LinearSource(), good))


def test_measure_in_one_worker_and_in_all(linear_engine: Engine) -> None:
    samples = linear_engine.measure(1, 8, QUICK)
    assert QUICK.min_runs <= len(samples) <= QUICK.max_runs
    assert all(s > 0 for s in samples)
    per_instance = linear_engine.measure_all(QUICK)
    assert len(per_instance) == 2
    assert all(QUICK.min_runs <= len(s) <= QUICK.max_runs for s in per_instance)


def test_memory_report_covers_the_workers(linear_engine: Engine) -> None:
    report = linear_engine.memory()
    assert [p.pid for p in report.processes] == linear_engine.pids
    assert 0 < report.pss_bytes <= report.rss_bytes


def test_handler_file_weights_made_in_initialize_are_shared(weights_dir: Path) -> None:
    from packrat.models.handler_file import HandlerFileSource

    source = HandlerFileSource(
        Path(__file__).resolve().parents[1] / "fixtures" / "linear_handler.py"
    )
    plan = plan_of(InstanceSpec(1, 2, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    reference = source.load()
    reference.initialize()
    requests = pool_handlers.make_linear_requests(3)
    with Engine(source, plan, EngineConfig(weights_dir=weights_dir)) as engine:
        assert_same(engine.infer(requests), reference.handle(list(requests)))
        # The weights only exist after initialize(); the worker maps them after it.
        assert [r.shared_bytes for r in engine.ready] == [(16 * 4 + 4) * 4] * 2


def test_uneven_batches_multi_threaded_and_shared_cpus(weights_dir: Path) -> None:
    # Instance 0 has two threads; on small machines instances overlap on CPUs.
    wide = (CPUS[1], CPUS[2]) if len(CPUS) >= 3 else (CPUS[-1], CPUS[-1])
    plan = plan_of(
        InstanceSpec(2, 4, wide), InstanceSpec(1, 1, (cpu(0),)), InstanceSpec(1, 2, (cpu(1),))
    )
    source = pool_handlers.LinearSource(256, 64, seed=5)
    before = child_pids(os.getpid())
    with Engine(source, plan, EngineConfig(weights_dir=weights_dir)) as engine:
        requests = pool_handlers.make_linear_requests(7, 256)
        assert_same(engine.infer(requests), reference_outputs(source, requests))
        engine.measure(0, 64, QUICK)  # a batch large enough for the thread pool to spin up
        infos = engine.describe()
        assert infos[0].threads == 2
        for info, instance in zip(infos, plan.instances, strict=True):
            assert set(info.affinity_by_thread.values()) == {frozenset(instance.cores)}
        pids = engine.pids
    assert engine.state is EngineState.CLOSED
    assert all(process_is_gone(pid) for pid in pids)
    assert leftover_children(before) == set()
    assert not set(pids) & {p.pid for p in multiprocessing.active_children()}


def test_a_killed_worker_loses_only_its_sub_batch_and_is_replaced(weights_dir: Path) -> None:
    plan = plan_of(InstanceSpec(1, 1, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    before = child_pids(os.getpid())
    engine = Engine(pool_handlers.ScriptedSource(), plan, EngineConfig(weights_dir=weights_dir))
    # Started from a thread that then ends: workers must outlive it (parent-death signal).
    starter = threading.Thread(target=engine.start)
    starter.start()
    starter.join()
    time.sleep(0.3)
    assert engine.infer([1.0, 2.0]) == [2.0, 4.0]
    survivor, victim = engine.pids
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    first, second = engine.run_split([1.0, 2.0], [1, 1])
    assert time.monotonic() - started < 5.0
    assert first.outputs == (2.0,) and first.error is None and not first.lost
    assert second.lost and second.outputs == ()
    assert second.error == f"instance 1 (pid {victim}, cores [{cpu(1)}]) died with exit code -9"
    assert engine.state is EngineState.DEGRADED and engine.lost == [1]
    with pytest.raises(WorkerError, match=r"lost workers \[1\]; call replace_lost"):
        engine.infer([1.0, 2.0])

    assert engine.replace_lost() == [1]
    assert engine.state is EngineState.RUNNING and engine.lost == []
    assert engine.pids[0] == survivor and engine.pids[1] not in (survivor, victim)
    (_, info) = engine.describe()
    assert set(info.affinity_by_thread.values()) == {frozenset({cpu(1)})}  # same cores
    assert engine.infer([3.0, 4.0]) == [6.0, 8.0]
    assert engine.replace_lost() == []  # nothing lost now
    engine.close()
    engine.close()
    assert leftover_children(before) == set()


def test_a_hung_worker_times_out_and_is_replaced(weights_dir: Path) -> None:
    plan = plan_of(InstanceSpec(1, 1, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    config = EngineConfig(weights_dir=weights_dir, batch_timeout_s=0.5, stop_timeout_s=0.5)
    before = child_pids(os.getpid())
    with Engine(pool_handlers.ScriptedSource(), plan, config) as engine:
        hung = engine.pids[1]
        started = time.monotonic()
        with pytest.raises(WorkerError, match=r"instance 1 .* did not reply within 0.5 s"):
            engine.infer([1.0, 20_000.0])
        assert time.monotonic() - started < 3.0
        assert engine.state is EngineState.DEGRADED
        assert engine.replace_lost() == [1]
        assert process_is_gone(hung)  # killed, not left computing
        assert engine.infer([1.0, 2.0]) == [2.0, 4.0]
    assert leftover_children(before) == set()


def test_a_worker_lost_outside_a_batch_breaks_the_engine(weights_dir: Path) -> None:
    plan = plan_of(InstanceSpec(1, 1, (cpu(0),)))
    with Engine(
        pool_handlers.ScriptedSource(), plan, EngineConfig(weights_dir=weights_dir)
    ) as engine:
        os.kill(engine.pids[0], signal.SIGKILL)
        with pytest.raises(WorkerError, match="died"):
            engine.describe()
        assert engine.state is EngineState.BROKEN
        assert engine.replace_lost() == []
        with pytest.raises(WorkerError, match="broken"):
            engine.infer([1.0])


def test_close_from_another_thread_ends_a_hung_call(weights_dir: Path) -> None:
    plan = plan_of(InstanceSpec(1, 1, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    config = EngineConfig(weights_dir=weights_dir, stop_timeout_s=0.5)  # no batch timeout
    before = child_pids(os.getpid())
    engine = Engine(pool_handlers.ScriptedSource(), plan, config)
    engine.start()
    errors: list[BaseException] = []

    def hung_call() -> None:
        try:
            engine.infer([1.0, 60_000.0])
        except WorkerError as exc:
            errors.append(exc)

    caller = threading.Thread(target=hung_call)
    caller.start()
    time.sleep(0.3)
    started = time.monotonic()
    engine.close()
    caller.join(timeout=10)
    assert not caller.is_alive()
    assert time.monotonic() - started < 5.0
    assert len(errors) == 1 and "died" in str(errors[0])
    assert leftover_children(before) == set()


def test_a_model_that_cannot_load_fails_start_with_its_message(weights_dir: Path) -> None:
    plan = plan_of(InstanceSpec(1, 1, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    before = child_pids(os.getpid())
    engine = Engine(pool_handlers.BrokenSource(), plan, EngineConfig(share_weights=False))
    with pytest.raises(
        WorkerError,
        match=r"instance \d \(pid \d+, cores \[\d+\]\) failed to load: ModelError: no such model",
    ):
        engine.start()
    assert engine.state is EngineState.CLOSED
    assert leftover_children(before) == set()
    # With weight sharing, the export helper is the first to fail.
    with pytest.raises(WorkerError, match="weights export helper .* failed to load: ModelError"):
        Engine(pool_handlers.BrokenSource(), plan, EngineConfig(weights_dir=weights_dir)).start()
    assert leftover_children(before) == set()


def test_start_timeout_leaves_nothing_behind(weights_dir: Path) -> None:
    plan = plan_of(InstanceSpec(1, 1, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    config = EngineConfig(share_weights=False, start_timeout_s=0.05)
    before = child_pids(os.getpid())
    with pytest.raises(WorkerError, match=r"2 worker\(s\) not ready within 0.05 s"):
        Engine(pool_handlers.ScriptedSource(), plan, config).start()
    assert leftover_children(before) == set()


def test_many_instances_start_concurrently(weights_dir: Path) -> None:
    count = 4
    plan = plan_of(*(InstanceSpec(1, 1, (cpu(i),)) for i in range(count)))
    with Engine(
        pool_handlers.ScriptedSource(), plan, EngineConfig(weights_dir=weights_dir)
    ) as engine:
        assert engine.infer([float(i) for i in range(count)]) == [2.0 * i for i in range(count)]
        load_s = [r.load_s for r in engine.ready]
        assert engine.start_s is not None
        # Sequential boots would take the sum of the boot times; overlapping ones much less.
        assert engine.start_s < 0.75 * sum(load_s)


def test_weights_file_is_exported_once(tmp_path: Path) -> None:
    source = pool_handlers.LinearSource(32, 8, seed=9)
    path = ensure_weights_file(source, tmp_path / "w", timeout_s=120.0)
    assert path == weights_file(source.identity(), tmp_path / "w")
    stamp = path.stat().st_mtime_ns
    assert ensure_weights_file(source, tmp_path / "w", timeout_s=120.0) == path
    assert path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [path.name]
