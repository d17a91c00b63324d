"""A pool of ONNX Runtime / OpenVINO instances: a batch split over two single-thread workers
answers like torch, and each worker's threads stay on its own cores, also after re-threading
in place (workers moved and grown rebuild their runtime there) and after batches ran."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from packrat.models import Backend, ConvertedSource, ZooSource, convert_source
from packrat.pool import Engine, EngineConfig
from packrat.pool.affinity import affinity_of_process
from packrat.types import InstanceSpec, Plan

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytestmark = pytest.mark.slow

CPUS = sorted(os.sched_getaffinity(0))


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

        # Same thread counts, swapped cores: the runtimes must follow the move, too.
        swapped = _plan(InstanceSpec(1, 3, (CPUS[1],)), InstanceSpec(1, 2, (CPUS[0],)))
        done = engine.reconfigure(swapped)
        assert (done.retuned, done.spawned) == (2, 0)
        _assert_close(engine.infer(requests), answers)
        _assert_on_own_cores(engine, swapped)

        done = engine.reconfigure(fat)
        assert (done.retuned, done.spawned) == (1, 0)
        _assert_close(engine.infer(requests), answers)
        _assert_on_own_cores(engine, fat)
        assert [info.threads for info in engine.describe()] == [2]


def _assert_on_own_cores(engine: Engine, plan: Plan) -> None:
    """Every thread of each plan worker runs on (a subset of) its instance's cores; the
    runtime may pin a thread to one of them (OpenVINO does)."""
    for info, instance, pid in zip(engine.describe(), plan.instances, engine.pids, strict=True):
        assert info.threads == instance.threads
        assert all(cpus <= frozenset(instance.cores) for cpus in info.affinity_by_thread.values())
        assert affinity_of_process(pid) == info.affinity_by_thread


def _assert_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
