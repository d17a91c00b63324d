"""Triton's perf_analyzer against a real `packrat serve`: it starts (server metadata, model
metadata, model configuration), then measures in concurrency and request-rate modes with
every kind of input data it makes, and no request fails.

Short windows (`-p 500`, three trials, any spread counted stable) keep each run to seconds:
this checks that perf_analyzer works against Packrat, not how fast Packrat is.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .perf_analyzer import PerfAnalyzer, install_or_skip
from .server import RunningServer, packrat_serve

pytestmark = pytest.mark.slow

MODEL = "tiny-resnet"  # float32 [3,32,32] -> 10 logits
QUICK = ("--measurement-interval", "500", "--max-trials", "3", "--stability-percentage", "1000")
_REQUESTS = re.compile(r'^packrat_requests_total\{code="(\d+)",model="([^"]+)"\} (\S+)$', re.M)
_COUNTED = re.compile(r"^\s*Request count: (\d+)$", re.M)


@pytest.fixture(scope="session")
def perf_analyzer() -> PerfAnalyzer:
    return install_or_skip()


@pytest.fixture(scope="module")
def server(
    perf_analyzer: PerfAnalyzer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    # A pinned plan starts without profiling; what perf_analyzer sees does not depend on it.
    workdir = tmp_path_factory.mktemp("perf-analyzer")
    args = ("--max-batch-size", "4", "--plan", "<1,1,4>")
    with packrat_serve(MODEL, *args, workdir=workdir) as running:
        yield running


def answered(server: RunningServer) -> dict[str, float]:
    """Requests to MODEL the server has answered so far, by HTTP status."""
    text = httpx.get(server.inference + "/metrics").text
    return {code: float(n) for code, model, n in _REQUESTS.findall(text) if model == MODEL}


def measure(
    tool: PerfAnalyzer, server: RunningServer, tmp_path: Path, *args: str
) -> list[dict[str, str]]:
    """Run perf_analyzer on MODEL with `args`; check that it finished, that every measured
    level counted requests, and that the server answered every request it sent with 200.
    Returns the rows of its CSV report, one per load level."""
    before = answered(server)
    report = tmp_path / "report.csv"
    address = server.inference.removeprefix("http://")
    done = tool.run("-m", MODEL, "-u", address, *QUICK, "-f", str(report), *args)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "error" not in output.lower(), output
    counted = [int(n) for n in _COUNTED.findall(output)]
    with report.open() as rows:
        levels = list(csv.DictReader(rows))
    assert len(counted) == len(levels) > 0, output
    assert all(n > 0 for n in counted), output
    assert all(float(level["Inferences/Second"]) > 0 for level in levels), levels
    after = answered(server)
    failed = {code: n - before.get(code, 0.0) for code, n in after.items() if code != "200"}
    assert not any(failed.values()), f"non-200 answers: {failed}"
    assert after["200"] - before.get("200", 0.0) >= sum(counted)
    return levels


def test_the_configuration_perf_analyzer_reads(server: RunningServer) -> None:
    assert "model_configuration" in httpx.get(server.inference + "/v2").json()["extensions"]
    config = httpx.get(f"{server.inference}/v2/models/{MODEL}/config").json()
    assert config["max_batch_size"] == 4
    assert config["input"][0]["dims"] == [3, 32, 32]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["output"][0] == {
        "name": "output0",
        "data_type": "TYPE_FP32",
        "dims": [10],
        "label_filename": "",
        "is_shape_tensor": False,
    }
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert config["instance_group"][0]["count"] == 1
    metadata = httpx.get(f"{server.inference}/v2/models/{MODEL}").json()
    assert metadata["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": [-1, 10]}]


def test_concurrency_1_to_8(
    perf_analyzer: PerfAnalyzer, server: RunningServer, tmp_path: Path
) -> None:
    levels = measure(perf_analyzer, server, tmp_path, "--concurrency-range", "1:8")
    assert sorted(int(level["Concurrency"]) for level in levels) == list(range(1, 9))


def test_request_rate(perf_analyzer: PerfAnalyzer, server: RunningServer, tmp_path: Path) -> None:
    levels = measure(perf_analyzer, server, tmp_path, "--request-rate-range", "20:60:20")
    assert sorted(float(level["Request Rate"]) for level in levels) == [20, 40, 60]


@pytest.mark.parametrize(
    "args",
    [
        ("--input-data", "zero"),
        ("--input-data", "random", "--async"),
        ("--input-data", "zero", "--input-tensor-format", "json", "--output-tensor-format", "json"),
        ("--input-data", "zero", "-b", "4"),
        ("--input-data", "zero", "--request-rate-range", "40", "--request-distribution", "poisson"),
    ],
    ids=["zero", "random-async", "json-tensors", "batch-4", "poisson"],
)
def test_input_data_and_modes(
    perf_analyzer: PerfAnalyzer, server: RunningServer, tmp_path: Path, args: tuple[str, ...]
) -> None:
    mode = () if "--request-rate-range" in args else ("--concurrency-range", "2")
    measure(perf_analyzer, server, tmp_path, *mode, *args)


def test_input_data_from_a_json_file(
    perf_analyzer: PerfAnalyzer, server: RunningServer, tmp_path: Path
) -> None:
    data = tmp_path / "inputs.json"
    values = [[(i * 7 + k) % 11 / 10 for k in range(3 * 32 * 32)] for i in range(3)]
    data.write_text(json.dumps({"data": [{"input0": row} for row in values]}))
    measure(perf_analyzer, server, tmp_path, "--concurrency-range", "2", "--input-data", str(data))
