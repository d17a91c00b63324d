"""The sampling stop rule and cell summaries."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packrat.stats import (
    SamplingPolicy,
    ci_half_width,
    merge_passes,
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
        SamplingPolicy(min_runs=0)
    with pytest.raises(ValueError, match="min_runs"):
        SamplingPolicy(min_runs=6, max_runs=5)


@given(st.lists(st.lists(st.floats(1.0, 1000.0), min_size=2, max_size=20), min_size=2, max_size=6))
def test_passes_merge_to_the_median_of_their_means_and_the_spread_of_all_runs(
    passes: list[list[float]],
) -> None:
    merged = merge_passes([summarize(p) for p in passes])
    every_run = [x for p in passes for x in p]
    assert merged.mean_ms == statistics.median(statistics.fmean(p) for p in passes)
    assert merged.n == len(every_run) and merged.pass_count == len(passes)
    assert merged.stdev_ms == pytest.approx(statistics.stdev(every_run), rel=1e-6, abs=1e-9)
    assert [p.mean_ms for p in merged.passes] == [statistics.fmean(p) for p in passes]


def test_one_slow_pass_does_not_move_a_cell() -> None:
    steady, slow = summarize([100.0, 101.0, 99.0]), summarize([150.0, 151.0, 149.0])
    cell = summarize([100.0, 100.5, 99.5]).with_pass(slow).with_pass(steady)
    assert cell.pass_count == 3 and cell.mean_ms == 100.0
    assert summarize([5.0, 6.0]).pass_count == 1


def test_passes_share_the_sampling_budget() -> None:
    policy = SamplingPolicy(warmup_runs=2, min_runs=5, max_runs=200, rel_ci=0.03, max_time_s=30)
    each = policy.per_pass(4)
    assert (each.warmup_runs, each.min_runs, each.max_runs) == (2, 2, 50)
    assert each.rel_ci == pytest.approx(0.06) and each.max_time_s == 7.5
    assert policy.per_pass(1) is policy
    # One run a pass where the passes together make the least number of runs.
    assert (
        policy.per_pass(5).min_runs == 1 and replace(policy, min_runs=2).per_pass(2).min_runs == 1
    )
    with pytest.raises(ValueError, match="passes"):
        policy.per_pass(0)
