"""The sampling stop rule and cell summaries."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packrat.profiler.stats import (
    SamplingPolicy,
    ci_half_width,
    should_stop,
    summarize,
    t95,
)


def test_t95_table() -> None:
    assert t95(1) == pytest.approx(12.706)
    assert t95(10) == pytest.approx(2.228)
    assert t95(1000) == 1.96
    with pytest.raises(ValueError):
        t95(0)


def test_stops_when_ci_is_tight() -> None:
    policy = SamplingPolicy(min_runs=5, max_runs=100, rel_ci=0.03, max_time_s=1e9)
    tight = [100.0, 101.0, 99.0, 100.5, 99.5]
    assert should_stop(tight, 0.0, policy)
    noisy = [100.0, 150.0, 60.0, 130.0, 80.0]
    assert not should_stop(noisy, 0.0, policy)
    assert not should_stop(tight[:4], 0.0, policy), "min_runs not reached"


def test_caps_stop_a_noisy_cell() -> None:
    policy = SamplingPolicy(min_runs=3, max_runs=6, rel_ci=0.01, max_time_s=2.0)
    noisy = [1.0, 3.0, 2.0, 5.0]
    assert not should_stop(noisy, 1.0, policy)
    assert should_stop(noisy, 2.5, policy), "time cap"
    assert should_stop(noisy * 2, 0.0, policy), "run cap"


@given(st.lists(st.floats(0.1, 1e4), min_size=2, max_size=50))
def test_summary_matches_statistics(samples: list[float]) -> None:
    s = summarize(samples)
    assert s.n == len(samples)
    assert s.mean_ms == pytest.approx(statistics.fmean(samples))
    assert s.p50_ms == pytest.approx(statistics.median(samples))
    assert min(samples) <= s.p95_ms <= max(samples)
    assert sum(x <= s.p95_ms for x in samples) >= math.ceil(0.95 * len(samples))
    assert s.ci95_ms == pytest.approx(ci_half_width(samples))


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="rel_ci"):
        SamplingPolicy(rel_ci=0)
    with pytest.raises(ValueError, match="min_runs"):
        SamplingPolicy(min_runs=1)
