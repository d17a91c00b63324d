"""`packrat profile`'s sampling options: what they turn into, and which are refused."""

from __future__ import annotations

import pytest

from packrat.cli.profile_cmd import sampling_policy
from packrat.errors import PackratError


def test_fewer_runs_than_the_usual_least_lower_the_least() -> None:
    policy = sampling_policy(rel_ci=0.05, max_runs=3, max_time_s=10.0)
    assert (policy.min_runs, policy.max_runs, policy.rel_ci) == (3, 3, 0.05)
    assert sampling_policy(rel_ci=0.05, max_runs=200, max_time_s=10.0).min_runs == 5


def test_a_cell_needs_two_runs_and_a_bad_value_is_one_clear_error() -> None:
    with pytest.raises(PackratError, match="--max-runs must be at least 2"):
        sampling_policy(rel_ci=0.05, max_runs=1, max_time_s=10.0)
    with pytest.raises(PackratError, match="--rel-ci"):
        sampling_policy(rel_ci=1.5, max_runs=10, max_time_s=10.0)
