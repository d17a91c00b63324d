"""TorchServe's metric names (`--metrics-compat torchserve`) beside Packrat's, moving with the
same events: requests through the inference app, queue waits from the batcher."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

from packrat.controller.batching import BatchingConfig
from packrat.server.batcher import Batcher
from packrat.server.http_config import HttpConfig
from packrat.server.http_inference import create_inference_app
from packrat.server.metrics import Metrics
from packrat.server.metrics_torchserve import NAMES, TorchServeMetrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FAIL_MARKER, FakeModel, FakeRepository  # noqa: E402

LABELS = 'model_name="double",model_version="1.0",hostname="host-a"'


def _value(text: str, name: str, labels: str = LABELS) -> float:
    match = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    assert match is not None, f"{name}{{{labels}}} missing from:\n{text}"
    return float(match.group(1))


def test_names_types_and_labels_as_torchserve_writes_them() -> None:
    metrics = Metrics(TorchServeMetrics(hostname="host-a"))
    metrics.observe_request("double", 200, 0.25, "1.0")
    text = metrics.exposition().decode()
    for name in NAMES:
        assert f"# TYPE {name} counter\n" in text
    assert (
        "# HELP ts_inference_latency_microseconds Torchserve prometheus counter metric with "
        "unit: Microseconds" in text
    )
    assert _value(text, "ts_inference_requests_total") == 1.0
    assert _value(text, "ts_inference_latency_microseconds") == 250_000.0
    assert "packrat_requests_total" in text  # Packrat's own stay
    assert "ts_inference_requests_total" not in Metrics().exposition().decode()


def test_counts_move_with_requests_through_the_inference_api() -> None:
    metrics = Metrics(TorchServeMetrics(hostname="host-a"))
    app = create_inference_app(FakeRepository(FakeModel("double", "1.0")), HttpConfig(), metrics)
    client = TestClient(app, raise_server_exceptions=False)
    ok = np.ones(3, np.float32).tobytes()
    failing = np.full(3, FAIL_MARKER, np.float32).tobytes()
    for body in (ok, ok, failing):
        client.post("/predictions/double", content=body)
    text = client.get("/metrics").text
    assert _value(text, "ts_inference_requests_total") == 3.0  # every answer, as TorchServe
    latency_us = _value(text, "ts_inference_latency_microseconds")  # the two 200s only
    client.post(
        "/v2/models/double/infer",
        json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
    )
    text = client.get("/metrics").text
    assert _value(text, "ts_inference_requests_total") == 4.0
    assert _value(text, "ts_inference_latency_microseconds") > latency_us > 0


def test_queue_latency_adds_each_requests_wait() -> None:
    metrics = Metrics(TorchServeMetrics(hostname="host-a"))
    metrics.observe_queue("double", "1.0", [0.001, 0.002, -1.0])
    metrics.observe_queue("double", "1.0", [0.0005])
    text = metrics.exposition().decode()
    assert _value(text, "ts_queue_latency_microseconds") == 3500.0


def test_the_batcher_tells_the_running_batch_how_long_its_requests_waited() -> None:
    seen: list[tuple[float, ...]] = []

    async def main() -> None:
        async def run_batch(requests: list[int]) -> list[int]:
            seen.append(batcher.running_waits_s)
            await asyncio.sleep(0.05)
            return requests

        batcher: Batcher[int, int] = Batcher(run_batch, BatchingConfig(max_batch_size=2))
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first batch runs alone; the next two queue behind it
        await asyncio.gather(first, batcher.submit(1), batcher.submit(2))
        assert batcher.running_waits_s == ()
        await batcher.stop()

    asyncio.run(main())
    assert [len(waits) for waits in seen] == [1, 2]
    assert seen[0][0] < 0.02 and min(seen[1]) >= 0.03  # they waited for the running batch
