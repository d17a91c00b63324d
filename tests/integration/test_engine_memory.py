"""Weight sharing: a second instance must not add another copy of the weights.

The model is a Linear 4096 x 4096 (64 MiB of float32 weights), large next to the noise in a
worker's own memory (~150 MiB of torch runtime, steady to within ~1 MiB from one worker to
the next). PSS sums to the memory the workers use together.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from packrat.pool import Engine, EngineConfig, MemoryReport
from packrat.types import InstanceSpec, Plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import pool_handlers  # noqa: E402

pytestmark = pytest.mark.slow

FEATURES = 4096
WEIGHT_BYTES = FEATURES * FEATURES * 4
CPUS = sorted(os.sched_getaffinity(0))
MIB = 2**20


def _serve(instances: int, share: bool, weights_dir: Path) -> MemoryReport:
    plan = Plan(
        cores=instances,
        batch=instances,
        latency_ms=0.0,
        instances=tuple(InstanceSpec(1, 1, (CPUS[i % len(CPUS)],)) for i in range(instances)),
    )
    config = EngineConfig(weights_dir=weights_dir, share_weights=share)
    with Engine(pool_handlers.LinearSource(FEATURES, FEATURES), plan, config) as engine:
        # Mapped pages are only resident (and counted) once a batch has read them.
        engine.infer(pool_handlers.make_linear_requests(instances, FEATURES))
        expected_shared = WEIGHT_BYTES + FEATURES * 4 if share else 0
        assert [r.shared_bytes for r in engine.ready] == [expected_shared] * instances
        return engine.memory()


def test_second_instance_adds_no_second_copy_of_the_weights(tmp_path: Path) -> None:
    shared = {n: _serve(n, True, tmp_path) for n in (1, 2)}
    private = {n: _serve(n, False, tmp_path) for n in (1, 2)}
    added_shared = shared[2].pss_bytes - shared[1].pss_bytes
    added_private = private[2].pss_bytes - private[1].pss_bytes
    summary = (
        f"PSS MiB shared 1:{shared[1].pss_bytes / MIB:.0f} 2:{shared[2].pss_bytes / MIB:.0f}; "
        f"private 1:{private[1].pss_bytes / MIB:.0f} 2:{private[2].pss_bytes / MIB:.0f}"
    )
    # A private second instance adds its runtime plus a copy of the weights; a sharing one
    # adds its runtime only, so the weights' part of what it adds is under half their size.
    assert added_shared < added_private - WEIGHT_BYTES / 2, summary
    assert private[2].pss_bytes - shared[2].pss_bytes > 0.75 * WEIGHT_BYTES, summary
    # The weights live in the file mapping, not in the workers' anonymous memory.
    assert private[2].pss_anon_bytes - shared[2].pss_anon_bytes > 1.5 * WEIGHT_BYTES, summary
