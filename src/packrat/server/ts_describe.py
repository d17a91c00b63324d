"""TorchServe's describe fields, from Packrat's description of a served model.

TorchServe clients (dashboards, scripts, its own CLI) read `GET /models/{name}`'s modelName,
modelVersion, modelUrl, runtime, minWorkers, maxWorkers, batchSize, maxBatchDelay,
responseTimeout, loadedAtStartup, workers and jobQueueStatus (`DescribeModelResponse` in
TorchServe 0.12). The management API answers them beside Packrat's own fields.

What they mean here: a *worker* is one instance of the plan now running (its worker process:
pid, resident memory); minWorkers and maxWorkers are both the plan's instance count, since the
plan, not a worker range, decides how many run; batchSize is the largest batch (max_batch_size)
and maxBatchDelay its delay in ms; responseTimeout is the seconds a worker may take on one
batch before it is replaced.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

RUNTIME = "python"
"""TorchServe's runtime value for models whose handler code is Python, as every one here is."""


def torchserve_fields(description: Mapping[str, Any], model_url: str) -> dict[str, Any]:
    """TorchServe's describe fields (less modelName and modelVersion) from
    `ServedModel.describe()`; fields the description lacks take TorchServe's defaults."""
    batching = _mapping(description.get("batching"))
    instances = [_mapping(i) for i in description.get("instances") or []]
    started = description.get("started_at_unix_s")
    ready = description.get("ready", description.get("state") == "running")
    fields: dict[str, Any] = {
        "modelUrl": model_url,
        "runtime": RUNTIME,
        "minWorkers": len(instances),
        "maxWorkers": len(instances),
        "batchSize": batching.get("max_batch_size", 1),
        "maxBatchDelay": batching.get("max_batch_delay_ms", 0),
        "loadedAtStartup": bool(description.get("loaded_at_startup", False)),
        "workers": [
            {
                "id": str(k),
                "startTime": _iso(started),
                "status": "READY" if ready else "UNLOADING",
                "memoryUsage": instance.get("rss_bytes") or 0,
                "pid": instance.get("pid") if instance.get("pid") is not None else -1,
                "gpu": False,
            }
            for k, instance in enumerate(instances)
        ],
    }
    timeout = batching.get("batch_timeout_s")
    if timeout is not None:
        fields["responseTimeout"] = int(timeout) if float(timeout).is_integer() else timeout
    if "max_queue" in batching:
        depth = int(batching.get("queue_depth") or 0)
        fields["jobQueueStatus"] = {
            "remainingCapacity": max(0, int(batching["max_queue"]) - depth),
            "pendingRequests": depth,
        }
    return fields


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _iso(unix_s: Any) -> str | None:
    """`2018-10-02T13:44:53.034Z`, as TorchServe writes a worker's start time."""
    if not isinstance(unix_s, int | float):
        return None
    moment = datetime.datetime.fromtimestamp(unix_s, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
