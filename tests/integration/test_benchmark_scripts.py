"""The simulator's benchmark scripts run end to end on small inputs. Nothing in the package
imports them, so only running them notices an API change that breaks one (as a positional
`SimConfig` once did: its batching settings were taken for the estimator's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "tests" / "fixtures" / "paper-profiles"
C6420 = PROFILES / "cloudlab-c6420"


def run_script(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_simulate_paper_reports_a_speedup_per_case(tmp_path: Path) -> None:
    output = tmp_path / "simulate.md"
    printed = run_script(
        "simulate_paper.py",
        *("--profiles", str(PROFILES), "--machines", "cloudlab-c6420:16"),
        *("--models", "resnet50", "--batches", "1,4", "--synthetic", "24"),
        *("--open-requests", "300", "--bursts", "2", "--output", str(output)),
    )
    assert "cloudlab-c6420 (T=16) resnet50: bursts" in printed
    assert "synthetic T=24" in printed
    assert "| cloudlab-c6420 (T=16) | resnet50 |" in output.read_text()
    assert (tmp_path / "simulate-speedup.png").stat().st_size > 0


def test_capacity_finds_node_counts(tmp_path: Path) -> None:
    printed = run_script(
        "capacity.py",
        *("--profiles", str(C6420), "--models", "resnet50", "--rates", "100"),
        *("--targets-ms", "500", "--plot", str(tmp_path / "capacity.png")),
    )
    row = next(line for line in printed.splitlines() if line.startswith("| resnet50 | 100 |"))
    auto_nodes, fat_nodes = (int(cell) for cell in row.split("|")[4:6])
    assert 1 <= auto_nodes <= fat_nodes


def test_estimator_defaults_scores_each_setting(tmp_path: Path) -> None:
    output = tmp_path / "estimator.md"
    run_script(
        "estimator_defaults.py",
        *("--only-given", "--profiles", str(C6420 / "resnet50_latency.csv")),
        *("--max-batch-size", "8", "--loads", "0.25:0.7", "--phase-s", "5"),
        *("--settle-s", "1", "--seeds", "1", "--alphas", "0.5,1", "--windows", "1"),
        *("--cooldowns", "0", "--output", str(output)),
    )
    text = output.read_text()
    assert "| `follow alpha=0.5,window=1,cooldown_s=0` |" in text
    assert "| `follow alpha=1,window=1,cooldown_s=0` |" in text
