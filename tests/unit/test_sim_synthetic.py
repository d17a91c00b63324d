"""Synthetic big-machine profiles: the Amdahl + per-thread fit and its extrapolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from packrat.optimizer.table import LatencyTable
from packrat.profiler.profile_file import Profile, load_profile
from packrat.sim import SimError, fit_profile, synthetic_profile
from packrat.sim.synthetic import fitted_threads
from packrat.stats import CellStats

PUBLISHED = Path(__file__).resolve().parents[1] / "fixtures" / "paper-profiles"


def _model(t: int, b: int) -> float:
    # serial 3 ms per request, 40 ms of parallel work per request, 0.5 ms per thread
    return 3.0 * b + 40.0 * b / t + 0.5 * t


def test_the_fit_recovers_a_table_made_by_the_model() -> None:
    table = LatencyTable.from_cells({(t, b): _model(t, b) for t in range(1, 17) for b in (1, 4)})
    fit = fit_profile(table)
    assert fit.batches == (1, 4)
    assert fit.serial_ms == pytest.approx((3.0, 12.0))
    assert fit.parallel_ms == pytest.approx((40.0, 160.0))
    assert fit.per_thread_ms == pytest.approx((0.5, 0.5))
    assert fit.rms_rel_error < 1e-9 and fit.max_rel_error < 1e-9
    assert fit.serial_share(4) == pytest.approx(12.0 / 172.0)
    assert fit.latency_ms(128, 4) == pytest.approx(_model(128, 4))


def test_coefficients_are_never_negative() -> None:
    # latency that grows with threads: no serial part or parallel speed-up fits it
    table = LatencyTable.from_cells({(t, 1): 10.0 + t for t in range(1, 9)})
    fit = fit_profile(table)
    assert min(fit.serial_ms + fit.parallel_ms + fit.per_thread_ms) >= 0.0


def test_amdahl_alone_never_grows_with_the_threads() -> None:
    table = LatencyTable.from_cells({(t, b): _model(t, b) for t in range(1, 17) for b in (1, 4)})
    fit = fit_profile(table, per_thread=False)
    assert fit.per_thread_ms == (0.0, 0.0)
    assert fit.rms_rel_error > 0.01  # the per-thread cost is missing from the model
    curve = [fit.latency_ms(t, 4) for t in range(1, 129)]
    assert all(a >= b for a, b in zip(curve, curve[1:], strict=False))


def test_a_batch_size_needs_three_thread_counts() -> None:
    with pytest.raises(SimError, match="3 or more thread counts"):
        fit_profile(LatencyTable.from_cells({(1, 1): 5.0, (2, 1): 3.0}))


def test_synthetic_profile_covers_one_and_even_thread_counts_up_to_its_cores() -> None:
    cells = {
        (t, b): CellStats(_model(t, b), _model(t, b), _model(t, b), 0.0, 1)
        for t in range(1, 17)
        for b in (1, 2)
    }
    source = Profile("toy", "sha256:00", {"cpu_model": "x"}, "2.0", cells)
    synthetic, fit = synthetic_profile(source, cores=64)
    assert {t for t, _ in synthetic.cells} == set(fitted_threads(64))
    assert fitted_threads(8) == (1, 2, 4, 6, 8)
    assert synthetic.cells[(64, 2)].mean_ms == pytest.approx(_model(64, 2))
    assert synthetic.machine["physical_cores"] == 64
    assert synthetic.source.startswith("synthetic:64 cores")
    assert fit.table(8).threads == (1, 2, 4, 6, 8)


def test_published_16_core_profiles_fit_within_five_percent_rms() -> None:
    for name in ("bert", "gpt2", "resnet50", "inception_v3"):
        table = load_profile(PUBLISHED / "cloudlab-c6420" / f"{name}_latency.csv").latency_table()
        fit = fit_profile(table)
        assert fit.rms_rel_error < 0.05, name
        assert fit.max_rel_error < 0.15, name
