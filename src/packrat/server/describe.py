"""The JSON a served model describes itself with (`ModelRuntime.describe`, the management
API): its model and input, its plan and instances (with each worker's pid and resident memory),
and its batching."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from packrat.errors import ModelError
from packrat.models.base import ModelIdentity, ModelSource
from packrat.models.inputs import InputSpec
from packrat.pool.protocol import InstancePool
from packrat.server.batcher import Batcher
from packrat.types import Plan


def describe_model(
    source: ModelSource,
    identity: ModelIdentity | None,
    input_spec: InputSpec | None,
    backend: dict[str, Any] | None,
) -> dict[str, Any]:
    """JSON-ready "model" (its source and content hash, once read), "input_spec",
    "requests" (what the handler takes) and "backend" of a served model."""
    return {
        "model": {
            "source": source.name,
            "content_hash": None if identity is None else identity.content_hash,
        },
        "input_spec": None if input_spec is None else input_spec.to_json(),
        "requests": "torchserve" if source.takes_raw_requests else "tensor",
        "backend": backend,
    }


def describe_plan(plan: Plan, pids: Sequence[int], pool_pids: Sequence[int] = ()) -> dict[str, Any]:
    """JSON-ready "plan" and "instances" of a model serving `plan` with the workers `pids`
    (plan order; empty before they started), and "pool": how many workers it holds
    (`pool_pids`, spares included: more than the instances where workers cannot move, one
    per layout of the plans) and their resident memory in all. ("workers" is TorchServe's
    key in the management API's describe.)"""
    rss = [_rss_bytes(pid) for pid in pool_pids]
    return {
        "pool": {
            "workers": len(pool_pids),
            "rss_bytes": None if None in rss else sum(r for r in rss if r is not None),
        },
        "plan": {
            "describe": plan.describe(),
            "cores": plan.cores,
            "batch": plan.batch,
            "predicted_latency_ms": _finite_or_none(plan.latency_ms),
        },
        "instances": [
            {
                "threads": instance.threads,
                "batch": instance.batch,
                "cores": list(instance.cores),
                "pid": pids[k] if k < len(pids) else None,
                "rss_bytes": _rss_bytes(pids[k]) if k < len(pids) else None,
            }
            for k, instance in enumerate(plan.instances)
        ],
    }


def describe_batching(
    batcher: Batcher[Any, Any], batch_timeout_s: float | None, profiled: bool
) -> dict[str, Any]:
    """JSON-ready "batching" (the batcher's settings and state, and the workers' batch
    timeout) and "split" (by the profile if `profiled`, else by thread share)."""
    config = batcher.config
    batching = {
        "max_batch_size": config.max_batch_size,
        "max_batch_delay_ms": config.max_batch_delay_ms,
        "max_queue": config.max_queue,
        "max_queue_wait_ms": config.max_queue_wait_ms,
        "overloaded": batcher.overloaded,
        "queue_depth": batcher.queue_depth,
        "batch_timeout_s": batch_timeout_s,
    }
    return {"batching": batching, "split": "profile" if profiled else "thread share"}


def _rss_bytes(pid: int) -> int | None:
    """Resident memory of process `pid` in bytes (Linux /proc), None if unreadable."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def declared_input_spec(source: ModelSource) -> InputSpec | None:
    """The input a source states without loading the model (zoo models, files given one)."""
    spec = getattr(source, "input_spec", None)
    return spec if isinstance(spec, InputSpec) else None


def example_input_spec(pool: InstancePool) -> InputSpec | None:
    """Shape and dtype of an example request of the model's handler if it is a tensor
    (duck-typed: no torch import). Integer inputs get no upper bound (unknown from one)."""
    examples = pool.example_requests(1)
    if not examples:
        return None
    shape, dtype = getattr(examples[0], "shape", None), getattr(examples[0], "dtype", None)
    if shape is None or dtype is None:
        return None
    try:
        return InputSpec(tuple(int(d) for d in shape), str(dtype).removeprefix("torch."))
    except (ModelError, TypeError, ValueError):
        return None
