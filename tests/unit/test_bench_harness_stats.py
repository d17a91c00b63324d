"""The benchmark harness's statistics over rounds, against values worked out by hand: the
median of the rounds, Student's t interval of their geometric mean (t quantiles as
`scipy.stats.t.ppf(0.975, dof)` gives them), and the rotation that puts each system first in
equally many rounds."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # as `python benchmarks/X.py` sees the harness
from harness.rounds import rotated  # noqa: E402
from harness.stats import Estimate  # noqa: E402

# The two-sided 95% t quantiles, t.ppf(0.975, dof), to more digits than packrat.stats keeps.
T_975 = {1: 12.706204736174698, 2: 4.302652729911275, 4: 2.7764451051977987}
REL = 1e-3  # packrat.stats rounds the quantiles to 3 decimals


def test_three_rounds_doubling_give_the_t_interval_of_their_geometric_mean() -> None:
    estimate = Estimate.of([1.0, 2.0, 4.0])
    # logs 0, ln 2, 2 ln 2: mean ln 2 (geometric mean 2), stdev ln 2, so the half-width in
    # logs is t(2) ln 2 / sqrt(3) and the interval 2 * 2^(-+t(2) / sqrt(3)).
    exponent = T_975[2] / math.sqrt(3)
    assert estimate.median == 2.0
    assert estimate.low == pytest.approx(2.0 * 2.0**-exponent, rel=REL)  # 0.3574
    assert estimate.high == pytest.approx(2.0 * 2.0**exponent, rel=REL)  # 11.19
    assert estimate.values == (1.0, 2.0, 4.0) and estimate.count == 3


def test_five_rounds_of_latencies() -> None:
    estimate = Estimate.of([10.0, 12.0, 11.0, 30.0, 9.0])
    # Geometric mean (10 * 12 * 11 * 30 * 9)^(1/5) = 12.894; the logs' stdev is 0.48408, so the
    # half-width in logs is t(4) * 0.48408 / sqrt(5) = 0.60108 and the interval
    # 12.894 * exp(-+0.60108) = (7.0688, 23.520).
    assert estimate.median == 11.0  # of the rounds, not of their logs or pooled requests
    assert estimate.low == pytest.approx(7.068817, rel=REL)
    assert estimate.high == pytest.approx(23.519513, rel=REL)
    assert math.sqrt(estimate.low * estimate.high) == pytest.approx(12.893996, rel=1e-7)


def test_ratios_of_half_and_double_average_to_one() -> None:
    # The geometric mean of ratios 0.5 and 2 is 1: the interval is symmetric about 1 in the
    # logs (low = 1 / high), where an arithmetic mean would call it 1.25x.
    estimate = Estimate.of([0.5, 2.0])
    assert estimate.median == 1.25  # the median of two is their arithmetic mean
    assert estimate.low * estimate.high == pytest.approx(1.0)
    # logs -+ln 2: stdev sqrt(2) ln 2, half-width t(1) sqrt(2) ln 2 / sqrt(2) = t(1) ln 2
    assert estimate.high == pytest.approx(2.0 ** T_975[1], rel=REL)


def test_a_ratio_estimate_is_the_geometric_mean_of_per_round_ratios() -> None:
    before, after = [10.0, 20.0, 40.0], [5.0, 20.0, 80.0]  # 0.5x, 1x, 2x by round
    estimate = Estimate.of([a / b for a, b in zip(after, before, strict=True)])
    assert estimate.median == 1.0
    assert math.sqrt(estimate.low * estimate.high) == pytest.approx(1.0)  # (0.5 * 1 * 2)^(1/3)


def test_rounds_without_a_value_are_left_out_but_kept_in_place() -> None:
    estimate = Estimate.of([math.nan, 4.0, 1.0])
    assert estimate.values[1:] == (4.0, 1.0) and math.isnan(estimate.values[0])
    assert estimate.count == 2 and estimate.median == 2.5
    # logs ln 4, 0: geometric mean 2, half-width t(1) ln 2 (as for 0.5 and 2, scaled by 2)
    assert estimate.low == pytest.approx(2.0 * 2.0 ** -T_975[1], rel=REL)
    assert estimate.high == pytest.approx(2.0 * 2.0 ** T_975[1], rel=REL)


def test_non_positive_values_have_no_logarithm_and_are_left_out() -> None:
    assert Estimate.of([0.0, -1.0, 3.0, 3.0]).median == 3.0
    assert Estimate.of([0.0, -1.0, 3.0, 3.0]).low == pytest.approx(3.0)  # no spread left


def test_one_round_has_a_median_but_no_interval_and_none_has_neither() -> None:
    one = Estimate.of([7.0])
    assert one.median == 7.0 and math.isnan(one.low) and math.isnan(one.high)
    assert one.count == 1
    none = Estimate.of([math.nan, math.nan])
    assert math.isnan(none.median) and math.isnan(none.low) and none.count == 0
    assert Estimate.of([]).count == 0


def test_rotation_puts_each_system_first_in_equally_many_rounds() -> None:
    systems = ["packrat", "torchserve", "triton", "fat"]
    rounds = [rotated(systems, index) for index in range(3 * len(systems))]
    assert rounds[:4] == [
        ["packrat", "torchserve", "triton", "fat"],
        ["torchserve", "triton", "fat", "packrat"],
        ["triton", "fat", "packrat", "torchserve"],
        ["fat", "packrat", "torchserve", "triton"],
    ]
    assert all(sorted(order) == sorted(systems) for order in rounds)  # each runs every round
    # Every system is in every position equally often: a drift falls alike on all of them.
    for position in range(len(systems)):
        assert Counter(order[position] for order in rounds) == dict.fromkeys(systems, 3)


def test_rotation_wraps_round_numbers_and_is_even_within_one_for_partial_cycles() -> None:
    systems = ["a", "b", "c"]
    assert rotated(systems, 7) == rotated(systems, 1) == ["b", "c", "a"]
    firsts = Counter(rotated(systems, index)[0] for index in range(5))
    assert sorted(firsts.values()) == [1, 2, 2]
    assert systems == ["a", "b", "c"]  # the caller's list is not reordered
