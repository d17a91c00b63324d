"""`packrat loadgen`: option checks as one-line errors, a run against a tiny local HTTP server,
and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from packrat.bench.loadgen import poisson
from packrat.cli import app

runner = CliRunner()
Stub = tuple[str, list[tuple[str, bytes]]]  # conftest's stub_model_server: its URL, its requests


def test_open_loop_run_writes_reports(stub_model_server: Stub, tmp_path: Path) -> None:
    url, bodies = stub_model_server
    args = ["loadgen", url, "-m", "m", "--rate", "20", "--duration", "0.5", "--seed", "3"]
    files = ["--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")]
    result = runner.invoke(app, [*args, "--shape", "4", *files, "--png", str(tmp_path / "r.png")])
    assert result.exit_code == 0, result.output
    assert "overall" in result.stdout and "wrote" in result.stdout
    expected = poisson(20, 0.5, seed=3).num_requests
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["overall"]["succeeded"] == expected == len(report["requests"])
    assert report["requests"][0]["compute_ms"] == 0.5
    assert len((tmp_path / "r.csv").read_text().splitlines()) == expected + 1
    assert (tmp_path / "r.png").stat().st_size > 0
    path, body = bodies[-1]
    assert path == "/predictions/m" and len(body) == 16


def test_closed_loop_v2_run(stub_model_server: Stub, tmp_path: Path) -> None:
    url, bodies = stub_model_server
    args = ["loadgen", url, "-m", "m", "--protocol", "v2", "--concurrency", "2"]
    result = runner.invoke(
        app, [*args, "--requests", "6", "--shape", "2,2", "--json", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["overall"]["succeeded"] == 6
    path, body = bodies[-1]
    assert path == "/v2/models/m/infer" and json.loads(body)["inputs"][0]["shape"] == [1, 2, 2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "one of --rate, --steps, --trace or --concurrency"),
        (["--rate", "5"], "--rate needs --duration"),
        (["--rate", "5", "--steps", "5:1", "--duration", "1"], "got --rate, --steps"),
        (["--steps", "5:1", "--duration", "1"], "--duration does not apply to --steps"),
        (["--concurrency", "2"], "--concurrency needs --duration, --requests"),
        (["--rate", "5", "--duration", "1", "--requests", "3"], "--requests applies to closed"),
        (["--steps", "5"], "RATE:SECONDS"),
        (["--rate", "1000", "--duration", "10", "--requests-max", "50"], "limit of 50"),
        (["--rate", "5", "--duration", "1", "--protocol", "grpc"], "--protocol must be"),
    ],
)
def test_bad_options_are_one_line_errors(extra: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["loadgen", "http://127.0.0.1:9", "-m", "m", "--shape", "4", *extra]
    )
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_payload_is_required_once(tmp_path: Path) -> None:
    base = ["loadgen", "http://127.0.0.1:9", "-m", "m", "--rate", "1", "--duration", "1"]
    result = runner.invoke(app, base)
    assert result.exit_code == 1 and "--payload FILE or --shape" in result.stderr
    (tmp_path / "x").write_bytes(b"x")
    result = runner.invoke(app, [*base, "--shape", "2", "--payload", str(tmp_path / "x")])
    assert result.exit_code == 1 and "not both" in result.stderr


def test_other_hosts_are_refused() -> None:
    args = ["loadgen", "http://192.168.1.1:8080", "-m", "m", "--rate", "1", "--duration", "1"]
    result = runner.invoke(app, [*args, "--shape", "2"])
    assert result.exit_code == 1 and "only targets this machine" in result.stderr


def test_loadgen_does_not_import_torch() -> None:
    code = "import packrat.cli.loadgen_cmd, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
