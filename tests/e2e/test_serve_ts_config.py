"""`packrat serve --ts-config`: TorchServe's example config.properties starts a server, with a
warning per ignored key; its model settings show in describe and its metrics_mode adds
TorchServe's metric names. One server start."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from .server import RunningServer, packrat_serve

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "torchserve" / "config.properties"
IGNORED = (
    "number_of_netty_threads",
    "cors_allowed_origin",
    "cors_allowed_methods",
    "cors_allowed_headers",
    "prefer_direct_buffer",
    "install_py_dep_per_model",
    "noop 1.0: marName",
    "noop 1.0: minWorkers",
    "noop 1.0: maxWorkers",
    "'vgg16'",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("ts-config")
    store = workdir / "model-store"
    store.mkdir()
    config = workdir / "config.properties"
    # The docs' example loads nothing by itself: load its "noop" entry as the zoo's
    # tiny-resnet (no .mar here), and ask for TorchServe's metric names.
    config.write_text(
        FIXTURE.read_text()
        + f"model_store={store}\nload_models=noop=tiny-resnet\nmetrics_mode=prometheus\n"
    )
    with packrat_serve(
        "--ts-config", str(config), "--backend", "torch", workdir=workdir
    ) as running:
        yield running


def test_each_ignored_key_gets_one_warning_line(server: RunningServer) -> None:
    warnings = [line for line in server.output.splitlines() if "packrat: warning:" in line]
    for key in IGNORED:
        assert sum(key in line for line in warnings) == 1, (key, warnings)
    assert len(warnings) == len(IGNORED)


def test_the_command_line_ports_win_over_the_files(server: RunningServer) -> None:
    for name in ("inference", "management", "metrics"):
        address = server.urls[name]
        assert address.startswith("http://127.0.0.1:") and not re.search(r":808[012]$", address)


def test_describe_shows_the_models_settings_as_torchserve_names_them(
    server: RunningServer,
) -> None:
    (described,) = httpx.get(server.management + "/models/noop").json()
    assert (described["modelName"], described["modelVersion"]) == ("noop", "1.0")
    assert (described["batchSize"], described["maxBatchDelay"]) == (4, 100.0)
    assert described["responseTimeout"] == 120 and described["loadedAtStartup"] is True
    assert described["batching"]["max_queue"] == 1000  # job_queue_size
    pids = [instance["pid"] for instance in described["instances"]]
    assert [worker["pid"] for worker in described["workers"]] == pids
    assert all(worker["memoryUsage"] > 0 for worker in described["workers"])


def test_torchserve_metric_names_move_with_requests(server: RunningServer) -> None:
    x = np.random.default_rng(0).standard_normal((3, 32, 32)).astype(np.float32)
    for _ in range(2):
        reply = httpx.post(server.inference + "/predictions/noop", content=x.tobytes())
        assert reply.status_code == 200, reply.text
    text = httpx.get(server.metrics + "/metrics").text
    labels = r'\{model_name="noop",model_version="1.0",hostname="[^"]+"\}'
    found = {
        name: float(value) for name, value in re.findall(rf"^(ts_\w+){labels} (\S+)$", text, re.M)
    }
    assert found["ts_inference_requests_total"] == 2.0
    assert found["ts_inference_latency_microseconds"] > 0
    assert found["ts_queue_latency_microseconds"] >= 0
    assert 'packrat_requests_total{code="200",model="noop"} 2.0' in text
