"""`packrat simulate`: JSON and table output, loads, errors as one line, and no torch."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from packrat.cli import app
from packrat.controller.estimator import EstimatorConfig

runner = CliRunner()
PUBLISHED = Path(__file__).resolve().parents[1] / "fixtures" / "paper-profiles"
BERT = PUBLISHED / "cloudlab-c6420" / "bert_latency.csv"


def _simulate(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["simulate", "-p", str(BERT), "-T", "16", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_json_for_a_published_csv() -> None:
    data = _simulate("--rate", "50", "--duration", "60", "--max-batch-size", "16")
    overall = data["overall"]
    assert isinstance(overall, dict)
    assert overall["requests"] == overall["served"] + overall["refused"]
    assert overall["refused"] == 0
    assert 20.0 < overall["latency_ms"]["p50"] < 200.0  # BERT's 16-thread cells: 21 to 60 ms
    assert data["config"]["cores"] == 16  # type: ignore[index]
    assert data["config"]["batching"]["max_batch_size"] == 16  # type: ignore[index]
    assert set(data) >= {"phases", "batches", "mean_batch_size", "switches", "time_per_plan_s"}


def test_fat_is_slower_than_auto_and_never_switches() -> None:
    common = ("--rate", "100", "--duration", "60", "--max-batch-size", "32")
    auto = _simulate(*common, "--policy", "auto")
    fat = _simulate(*common, "--policy", "fat")
    assert fat["switches"] == 0
    assert fat["overall"]["latency_ms"]["mean"] > auto["overall"]["latency_ms"]["mean"]  # type: ignore[index]


def test_steps_trace_and_synthetic_cores(tmp_path: Path) -> None:
    stepped = _simulate("--steps", "10:5,40:5", "--seed", "2")
    assert [p["name"] for p in stepped["phases"]] == ["phase 0 @ 10 rps", "phase 1 @ 40 rps"]  # type: ignore[union-attr]
    times = tmp_path / "trace.txt"
    times.write_text("0\n0.5\n1.0\n")
    traced = _simulate("--trace", str(times), "--policy", "<2,8,4>")
    assert traced["overall"]["served"] == 3  # type: ignore[index]
    big = runner.invoke(
        app,
        ["simulate", "-p", str(BERT), "-T", "128", "--synthetic-cores", "128", "--rate", "100",
         "--duration", "10", "--no-interpolate", "--json"],
    )  # fmt: skip
    assert big.exit_code == 0, big.output
    assert json.loads(big.stdout)["overall"]["refused"] == 0


def test_follow_takes_the_estimator_settings_given() -> None:
    common = ("--steps", "20:20,200:20,20:20", "--max-batch-size", "32", "--policy", "follow")
    default = _simulate(*common)
    assert default["config"]["estimator"] == dataclasses.asdict(EstimatorConfig())  # type: ignore[index]
    eager = _simulate(*common, "--estimator", "alpha=1,window=1,cooldown_s=0")
    assert eager["config"]["estimator"] == {"alpha": 1.0, "window": 1, "cooldown_s": 0.0}  # type: ignore[index]
    assert eager["switches"] > default["switches"]  # type: ignore[operator]


def test_table_output() -> None:
    result = runner.invoke(app, ["simulate", "-p", str(BERT), "-T", "16", "--steps", "10:5,40:5"])
    assert result.exit_code == 0, result.output
    for text in ("phase 1 @ 40 rps", "overall", "time per plan", "switches"):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "5"], "needs --rate and --duration"),
        ([], "give one load"),
        (["--rate", "5", "--duration", "5", "--policy", "best"], "unknown policy 'best'"),
        (["--rate", "5", "--duration", "5", "--max-batch-size", "0"], "max_batch_size"),
        (["--steps", "5"], "RATE:SECONDS"),
        (["--rate", "5", "--duration", "5", "--estimator", "window=x"], "--estimator: "),
    ],
)
def test_errors_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["simulate", "-p", str(BERT), "-T", "16", *args])
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_simulate_does_not_import_torch() -> None:
    code = (
        "import sys; from packrat.cli import app\n"
        f"sys.argv = ['packrat', 'simulate', '-p', {str(BERT)!r}, '-T', '16', '--rate', '20',"
        " '--duration', '10']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'packrat simulate imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_max_workers_plans_on_the_layouts_kept_and_says_so() -> None:
    resnet = PUBLISHED / "cloudlab-c6420" / "resnet50_latency.csv"
    common = ["simulate", "-p", str(resnet), "-T", "16", "--max-batch-size", "64"]
    load = ["--rate", "100", "--duration", "10"]
    kept = runner.invoke(app, [*common, *load, "--max-workers", "16"])
    assert kept.exit_code == 0, kept.output
    found = re.search(r"--max-workers 16: (\d+) workers kept of the (\d+) the optimal", kept.output)
    assert found and int(found[1]) <= 16 < int(found[2]), kept.output
    assert "x the optimal latency on average over batch sizes" in kept.output
    roomy = runner.invoke(app, [*common, *load, "--max-workers", "500"])
    assert f"the optimal plans need {found[2]}; all kept" in roomy.output
    as_json = runner.invoke(app, [*common, *load, "--max-workers", "16", "--json"])
    assert json.loads(as_json.stdout)["config"]["max_workers"] == 16
