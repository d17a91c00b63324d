"""Bench summaries: speedups, gap to the best configuration, CSV and plot files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from packrat.bench.offline import Measurement
from packrat.bench.report import mean_speedup, summarize_batches, write_csv, write_plot
from packrat.stats import CellStats


def _m(batch: int, label: str, roles: tuple[str, ...], mean: float, ci: float = 1.0) -> Measurement:
    # stdev chosen so that ci95 = t(4) * stdev / sqrt(5) = `ci` with n = 5
    stdev = ci * 5**0.5 / 2.776
    return Measurement(
        model="m",
        cores=2,
        batch=batch,
        label=label,
        roles=roles,
        plan=f"<{label}>",
        predicted_ms=mean * 0.9,
        stats=CellStats(mean, mean, mean, stdev, 5),
    )


RESULTS = [
    _m(8, "packrat", ("packrat", "single"), 60.0),
    _m(8, "fat", ("fat",), 90.0),
    _m(8, "homogeneous", ("homogeneous",), 58.0),
    _m(16, "packrat", ("packrat", "fat"), 100.0),
    _m(16, "single", ("single",), 120.0),
]


def test_summaries() -> None:
    s8, s16 = summarize_batches(RESULTS)
    assert s8.speedup_over_fat == pytest.approx(1.5)
    assert s8.best.label == "homogeneous"
    assert s8.gap_to_best == pytest.approx(60 / 58 - 1)
    assert s8.within_noise_of_best  # +-1 ms intervals around 60 and 58 touch
    assert s16.fat is s16.packrat and s16.speedup_over_fat == 1.0
    assert s8.predicted_speedup == pytest.approx(1.5)
    assert mean_speedup([s8, s16]) == pytest.approx(1.25)


def test_files(tmp_path: Path) -> None:
    write_csv(RESULTS, tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == len(RESULTS)
    assert rows[0]["roles"] == "packrat+single" and float(rows[0]["mean_ms"]) == 60.0
    write_plot(RESULTS, tmp_path / "r.png", "m")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
