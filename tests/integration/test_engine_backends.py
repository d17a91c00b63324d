"""A pool of ONNX Runtime / OpenVINO instances: a batch split over two single-thread workers
answers like torch, and each worker's threads stay on its own cores while it computes, also
after a switch of plans (ONNX Runtime's workers re-threaded in place rebuild their session
there; OpenVINO's are started on their new cores) and after batches ran."""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from packrat.models import Backend, ConvertedSource, ZooSource, convert_source
from packrat.pool import Engine, EngineConfig
from packrat.pool.affinity import affinity_of_process
from packrat.stats import SamplingPolicy
from packrat.types import InstanceSpec, Plan

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytestmark = pytest.mark.slow

CPUS = sorted(os.sched_getaffinity(0))
BUSY = SamplingPolicy(warmup_runs=1, min_runs=10, max_runs=10, max_time_s=5.0)


def _plan(*instances: InstanceSpec) -> Plan:
    return Plan(
        cores=sum(i.threads for i in instances),
        batch=sum(i.batch for i in instances),
        latency_ms=0.0,
        instances=instances,
    )


@pytest.fixture(scope="module")
def expected() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Five tiny-resnet requests and torch's answers to them."""
    handler = ZooSource("tiny-resnet").load()
    requests = handler.example_requests(5)
    return requests, handler.handle(requests)


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two cores")
@pytest.mark.parametrize("backend", [Backend.ONNXRUNTIME, Backend.OPENVINO], ids=lambda b: b.value)
def test_split_batch_on_pinned_workers_moved_and_rethreaded_in_place(
    backend: Backend,
    tmp_path: Path,
    expected: tuple[list[torch.Tensor], list[torch.Tensor]],
) -> None:
    source: ConvertedSource = convert_source(ZooSource("tiny-resnet"), backend, root=tmp_path)
    requests, answers = expected
    two = _plan(InstanceSpec(1, 3, (CPUS[0],)), InstanceSpec(1, 2, (CPUS[1],)))
    fat = _plan(InstanceSpec(2, 5, (CPUS[0], CPUS[1])))
    config = EngineConfig(
        weights_dir=tmp_path / "weights", start_timeout_s=180.0, batch_timeout_s=60.0
    )
    with Engine(source, two, config, pool_size=2) as engine:
        _assert_close(engine.infer(requests), answers)
        _assert_on_own_cores(engine, two)

        # Same thread counts, swapped cores: ONNX Runtime's workers move; OpenVINO's cannot
        # (it computes where a process first ran), so each instance takes over the other's.
        swapped = _plan(InstanceSpec(1, 3, (CPUS[1],)), InstanceSpec(1, 2, (CPUS[0],)))
        moves = source.moves_in_place
        done = engine.reconfigure(swapped)
        assert (done.retuned, done.spawned) == ((2, 0) if moves else (0, 0))
        _assert_close(engine.infer(requests), answers)
        _assert_on_own_cores(engine, swapped)

        done = engine.reconfigure(fat)  # OpenVINO: a new worker on both cores
        assert (done.retuned, done.spawned) == ((1, 0) if moves else (0, 1))
        _assert_close(engine.infer(requests), answers)
        _assert_on_own_cores(engine, fat)
        assert [info.threads for info in engine.describe()] == [2]


def _assert_on_own_cores(engine: Engine, plan: Plan) -> None:
    """Every thread of each plan worker runs on (a subset of) its instance's cores, at rest
    and while every instance computes; the runtime may pin a thread to one of them (OpenVINO
    does, as each batch starts: a look at rest would miss where it computes)."""
    for info, instance, pid in zip(engine.describe(), plan.instances, engine.pids, strict=True):
        assert info.threads == instance.threads
        assert all(cpus <= frozenset(instance.cores) for cpus in info.affinity_by_thread.values())
        assert affinity_of_process(pid) == info.affinity_by_thread
    for instance, seen in zip(plan.instances, _cpus_while_computing(engine, plan), strict=True):
        assert seen and all(cpus <= frozenset(instance.cores) for cpus in seen)


def _cpus_while_computing(engine: Engine, plan: Plan) -> list[set[frozenset[int]]]:
    """The CPU sets each plan worker's threads had, read every millisecond while all the
    instances time batches of 16 at once."""
    busy = dataclasses.replace(
        plan,
        batch=16 * len(plan.instances),
        instances=tuple(dataclasses.replace(i, batch=16) for i in plan.instances),
    )
    engine.replan(busy)
    seen: list[set[frozenset[int]]] = [set() for _ in plan.instances]
    with ThreadPoolExecutor(1) as executor:
        running = executor.submit(engine.measure_all, BUSY)
        while not running.done():
            for k, pid in enumerate(engine.pids):
                seen[k] |= set(affinity_of_process(pid).values())
            time.sleep(0.001)
        running.result()
    engine.replan(plan)
    return seen


def _assert_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
