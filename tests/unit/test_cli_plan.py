"""`packrat plan`: JSON and table output, errors as one line, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from packrat.cli import app
from packrat.profiler.profile_file import Profile, save_profile
from packrat.stats import CellStats

runner = CliRunner()


def _profile(tmp_path: Path) -> Path:
    # Two 1-thread instances with half the batch beat one 2-thread instance.
    cells = {
        (t, b): CellStats(mean_ms=b * 10.0 / t**0.5, p50_ms=0, p95_ms=0, stdev_ms=0, n=3)
        for t in (1, 2)
        for b in (1, 2, 4, 8)
    }
    prof = Profile(
        model_name="toy", content_hash="sha256:00", machine={}, torch_version="x", cells=cells
    )
    path = tmp_path / "toy.json"
    save_profile(prof, path)
    return path


def test_plan_json_schema(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["plan", "-p", str(_profile(tmp_path)), "-T", "2", "-B", "8", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"cores", "batch", "latency_ms", "fat_latency_ms", "instances"}
    assert (data["cores"], data["batch"]) == (2, 8)
    assert data["latency_ms"] == pytest.approx(40.0)
    assert data["fat_latency_ms"] == pytest.approx(80 / 2**0.5)
    assert [(i["threads"], i["batch"]) for i in data["instances"]] == [(1, 4), (1, 4)]
    cores = [c for i in data["instances"] for c in i["cores"]]
    assert len(cores) == len(set(cores)) == 2


def test_plan_table_reports_speedup(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "-p", str(_profile(tmp_path)), "-T", "2", "-B", "8"])
    assert result.exit_code == 0, result.output
    assert "<2,1,4>" in result.stdout
    assert "predicted speedup 1.41x" in result.stdout


def test_plan_with_chunks_plans_as_serve_does(tmp_path: Path) -> None:
    # Past batch 2 a request costs twice as much: shares of 4 run faster as two chunks of 2.
    cells = {
        (t, b): CellStats((10.0 if b <= 2 else 20.0) * b / t**0.5, 0, 0, 0, 3)
        for t in (1, 2)
        for b in (1, 2, 4, 8)
    }
    path = tmp_path / "steep.json"
    steep = Profile(
        model_name="steep", content_hash="sha256:00", machine={}, torch_version="x", cells=cells
    )
    save_profile(steep, path)
    args = ["plan", "-p", str(path), "-T", "2", "-B", "8"]
    whole = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert whole["latency_ms"] == pytest.approx(80.0) and "chunk" not in whole["instances"][0]
    result = runner.invoke(app, [*args, "--json", "--chunks"])
    assert result.exit_code == 0, result.output
    chunked = json.loads(result.stdout)
    assert chunked["latency_ms"] == pytest.approx(40.0)  # two chunks of 2 per instance
    assert [(i["threads"], i["batch"], i["chunk"]) for i in chunked["instances"]] == [
        (1, 4, 2),
        (1, 4, 2),
    ]
    assert chunked["fat_latency_ms"] == pytest.approx(4 * 20 / 2**0.5)  # the fat one chunks too
    table = runner.invoke(app, [*args, "--chunks"])
    assert table.exit_code == 0, table.output
    assert "chunks of" in table.stdout and "predicted latency 40.00 ms" in table.stdout


def test_plan_for_more_cores_than_this_machine(tmp_path: Path) -> None:
    # `plan` may plan for any T in the profile: cores are numbered on a synthetic machine.
    path = tmp_path / "big.json"
    cells = {(t, 4): CellStats(40.0 / t, 0, 0, 0, 1) for t in range(1, 65)}
    save_profile(Profile("big", "sha256:01", {}, "x", cells), path)
    result = runner.invoke(app, ["plan", "-p", str(path), "-T", "64", "-B", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["instances"][0]["cores"] == list(range(64))


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ["-T", "2", "-B", "8"], "profile file not found"),
        ("not json", ["-T", "2", "-B", "8"], "cannot read profile"),
        ('{"format": "packrat-profile", "version": 99}', ["-T", "2", "-B", "8"], "version 99"),
        (
            '{"format": "packrat-profile", "version": 1}',
            ["-T", "2", "-B", "8"],
            "malformed profile",
        ),
    ],
)
def test_bad_profile_is_one_line_error(
    tmp_path: Path, content: str | None, args: list[str], message: str
) -> None:
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["plan", "-p", str(path), *args])
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_uncoverable_batch_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    save_profile(Profile("odd", "sha256:02", {}, "x", {(1, 4): CellStats(4, 4, 4, 0, 1)}), path)
    result = runner.invoke(app, ["plan", "-p", str(path), "-T", "2", "-B", "6"])
    assert result.exit_code == 1
    assert "no plan covers batch 6 within 2 cores" in result.stderr


def test_plan_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from packrat.cli import app\n"
        f"sys.argv = ['packrat', 'plan', '-p', {str(_profile(tmp_path))!r}, '-T', '2', '-B', '8']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'packrat plan imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
