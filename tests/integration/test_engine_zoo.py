"""A zoo model (graph mode) on several real instances: same outputs, same order, any split."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from packrat.errors import PlanError
from packrat.models import ZooSource
from packrat.pool import Engine, EngineConfig
from packrat.types import InstanceSpec, Plan

pytestmark = pytest.mark.slow

CPUS = sorted(os.sched_getaffinity(0))


def _plan(*instances: InstanceSpec) -> Plan:
    return Plan(
        cores=sum(i.threads for i in instances),
        batch=sum(i.batch for i in instances),
        latency_ms=0.0,
        instances=instances,
    )


def test_tiny_resnet_multi_instance_equals_single_instance(tmp_path: Path) -> None:
    config = EngineConfig(weights_dir=tmp_path, start_timeout_s=180.0, batch_timeout_s=60.0)
    source = ZooSource("tiny-resnet")
    single = _plan(InstanceSpec(len(CPUS), 7, tuple(CPUS)))
    with Engine(source, single, config) as engine:
        requests = engine.example_requests(7)
        expected = engine.infer(requests)
    two = _plan(
        InstanceSpec(1, 4, (CPUS[0],)),
        InstanceSpec(1, 3, (CPUS[-1],)),
    )
    with Engine(source, two, config) as engine:
        assert len(engine.example_requests(7)) == 7
        got = engine.infer(requests)
        # Another batch split over the same workers (as for another batch size).
        engine.replan(_plan(InstanceSpec(1, 1, (CPUS[0],)), InstanceSpec(1, 6, (CPUS[-1],))))
        got_replanned = engine.infer(requests)
        with pytest.raises(PlanError, match="replan keeps the instances"):
            engine.replan(_plan(InstanceSpec(1, 7, (CPUS[0],))))
    for outputs in (got, got_replanned):
        assert len(outputs) == len(expected)
        for a, b in zip(outputs, expected, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    # Outputs are in request order: distinct inputs give distinct outputs at each position.
    assert not torch.allclose(expected[0], expected[1])


def test_run_split_leaves_instances_idle_and_keeps_order(tmp_path: Path) -> None:
    config = EngineConfig(weights_dir=tmp_path, start_timeout_s=180.0, batch_timeout_s=60.0)
    two = _plan(InstanceSpec(1, 2, (CPUS[0],)), InstanceSpec(1, 2, (CPUS[-1],)))
    with Engine(ZooSource("tiny-resnet"), two, config) as engine:
        requests = engine.example_requests(3)
        whole = engine.run_split(requests, [2, 1])
        idle = engine.run_split(requests, [0, 3])
        with pytest.raises(ValueError, match="do not add up"):
            engine.run_split(requests, [1, 1])
    assert [(p.instance, p.start, p.stop) for p in whole] == [(0, 0, 2), (1, 2, 3)]
    assert [(p.instance, p.start, p.stop) for p in idle] == [(1, 0, 3)]
    assert all(p.error is None for p in whole + idle)
    flat = [o for p in whole for o in p.outputs]
    for a, b in zip(flat, idle[0].outputs, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
