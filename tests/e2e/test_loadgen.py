"""`packrat loadgen` against a real `packrat serve`: both protocols, no failures, the counts
the seeded schedule says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from packrat.bench.loadgen import poisson

from .server import RunningServer, packrat_serve

pytestmark = pytest.mark.slow

HANDLER = Path(__file__).resolve().parents[1] / "fixtures" / "linear_handler.py"
MODEL = "linear_handler"  # requests are float32 tensors of shape [16]
RATE_RPS, DURATION_S = 10.0, 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("loadgen")
    # --fat: no profile to measure first, so the server is up in seconds.
    with packrat_serve(str(HANDLER), "--fat", workdir=workdir) as running:
        yield running


@pytest.mark.parametrize(("protocol", "seed"), [("torchserve", 1), ("v2", 2)])
def test_loadgen_cli(server: RunningServer, tmp_path: Path, protocol: str, seed: int) -> None:
    report = tmp_path / "load.json"
    command = [
        sys.executable,
        "-m",
        "packrat.cli",
        "loadgen",
        server.inference,
        "--model",
        MODEL,
        "--protocol",
        protocol,
        "--rate",
        str(RATE_RPS),
        "--duration",
        str(DURATION_S),
        "--shape",
        "16",
        "--seed",
        str(seed),
        "--timeout-s",
        "10",
        "--json",
        str(report),
        "--csv",
        str(tmp_path / "load.csv"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = poisson(RATE_RPS, DURATION_S, seed=seed).num_requests
    data = json.loads(report.read_text())
    overall = data["summary"]["overall"]
    assert (overall["requests"], overall["sent"], overall["succeeded"]) == (expected,) * 3
    assert overall["failed"] == 0 and overall["failures"] == {}
    assert len(data["requests"]) == expected
    assert all(r["status"] == 200 for r in data["requests"])
    if protocol == "torchserve":  # the TorchServe route reports the model's time
        assert all(r["compute_ms"] is not None for r in data["requests"])
    assert len((tmp_path / "load.csv").read_text().splitlines()) == expected + 1
    assert "overall" in done.stdout
