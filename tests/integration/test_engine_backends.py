"""A pool of ONNX Runtime / OpenVINO instances: a batch split over two single-thread workers
answers like torch and each worker's threads stay on its own core. Re-threading in place (one
worker grows to both cores) rebuilds an ONNX Runtime session there, which still answers right;
OpenVINO refuses to move (it binds its threads to the CPUs it started on)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from packrat.errors import WorkerError
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
def test_split_batch_on_pinned_single_thread_workers_then_rethreaded(
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
        for info, instance, pid in zip(engine.describe(), two.instances, engine.pids, strict=True):
            assert info.threads == 1
            assert set(info.affinity_by_thread.values()) == {frozenset(instance.cores)}
            assert affinity_of_process(pid) == info.affinity_by_thread

        if backend is Backend.OPENVINO:
            with pytest.raises(WorkerError, match="OpenVINO binds its threads to the CPUs"):
                engine.reconfigure(fat)
            return
        done = engine.reconfigure(fat)
        assert (done.retuned, done.spawned) == (1, 0)
        _assert_close(engine.infer(requests), answers)
        (info,) = engine.describe()
        assert info.threads == 2
        assert set(info.affinity_by_thread.values()) == {frozenset(CPUS[:2])}


def _assert_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
