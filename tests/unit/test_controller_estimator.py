"""The batch-size estimator: smoothing, rounding, the mode, and the cool-down."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packrat.controller.estimator import (
    BatchSizeEstimator,
    EstimatorConfig,
    round_down_pow2,
)


@pytest.mark.parametrize(
    ("value", "cap", "expected"),
    [(0.3, 32, 1), (1.9, 32, 1), (2.0, 32, 2), (7.99, 32, 4), (8.0, 32, 8), (31.0, 32, 16),
     (32.0, 32, 32), (100.0, 32, 32), (20.0, 24, 16), (24.0, 24, 24)],
)  # fmt: skip
def test_round_down_pow2(value: float, cap: int, expected: int) -> None:
    assert round_down_pow2(value, cap) == expected


def test_a_steady_load_moves_the_target_once() -> None:
    estimator = BatchSizeEstimator(32, target=1, config=EstimatorConfig(cooldown_s=0.0))
    changes = [estimator.observe(16, now_s=t * 0.1) for t in range(100)]
    proposed = [c for c in changes if c is not None]
    assert proposed[-1] == 16 and estimator.target == 16
    assert proposed == sorted(proposed)  # climbs, never back
    assert all(c is None for c in changes[-50:])  # then holds


def test_cooldown_spaces_changes() -> None:
    config = EstimatorConfig(alpha=1.0, window=1, cooldown_s=5.0)
    estimator = BatchSizeEstimator(32, target=1, config=config)
    assert estimator.observe(8, now_s=0.0) == 8
    assert estimator.observe(2, now_s=1.0) is None  # too soon
    assert estimator.observe(2, now_s=4.9) is None
    assert estimator.observe(2, now_s=5.0) == 2


PAPER_LIKE = EstimatorConfig(alpha=0.25, window=16, cooldown_s=0.0)
"""Heavy smoothing, for servers whose switches are slow."""


def test_a_short_burst_does_not_flip_the_plan_under_a_mode_window() -> None:
    estimator = BatchSizeEstimator(32, target=4, config=PAPER_LIKE)
    for t in range(40):
        assert estimator.observe(4, now_s=t) is None
    # One batch of 32 among steady batches of 4: the average jumps, the mode does not.
    assert estimator.observe(32, now_s=40) is None
    assert all(estimator.observe(4, now_s=41 + t) is None for t in range(20))
    assert estimator.target == 4


def test_the_default_follows_a_burst_and_comes_back_at_once() -> None:
    estimator = BatchSizeEstimator(32, target=4, config=EstimatorConfig())
    for t in range(40):
        assert estimator.observe(4, now_s=t) is None
    assert estimator.observe(32, now_s=40) == 16  # (32 + 4) / 2, rounded down
    assert estimator.observe(4, now_s=41) == 8  # 11: the average halves the way back
    assert estimator.observe(4, now_s=42) == 4  # 7.5
    assert estimator.target == 4


def test_per_batch_follows_every_batch_at_once() -> None:
    estimator = BatchSizeEstimator(32, target=32, config=EstimatorConfig.per_batch())
    assert estimator.observe(5, now_s=0.0) == 4
    assert estimator.observe(5, now_s=0.0) is None
    assert estimator.observe(32, now_s=0.0) == 32
    assert estimator.observe(0, now_s=0.0) == 1  # an empty queue counts as a batch of 1


def test_reset_starts_over_and_restarts_the_cooldown() -> None:
    config = EstimatorConfig(alpha=1.0, window=1, cooldown_s=3.0)
    estimator = BatchSizeEstimator(16, target=16, config=config)
    estimator.reset(2, now_s=10.0)
    assert estimator.target == 2 and estimator.average is None
    assert estimator.observe(16, now_s=12.0) is None
    assert estimator.observe(16, now_s=13.0) == 16


@given(
    depths=st.lists(st.integers(0, 200), min_size=1, max_size=60),
    cap=st.integers(1, 64),
    alpha=st.floats(0.01, 1.0),
    window=st.integers(1, 10),
)
def test_targets_are_always_valid_batch_sizes(
    depths: list[int], cap: int, alpha: float, window: int
) -> None:
    config = EstimatorConfig(alpha=alpha, window=window, cooldown_s=0.0)
    estimator = BatchSizeEstimator(cap, target=1, config=config)
    for t, depth in enumerate(depths):
        proposal = estimator.observe(depth, now_s=float(t))
        assert proposal is None or (1 <= proposal <= cap and proposal == estimator.target)
        assert estimator.target == cap or estimator.target & (estimator.target - 1) == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"window": 0}, "window"),
     ({"cooldown_s": -1.0}, "cooldown_s"), ({"cooldown_s": float("inf")}, "cooldown_s")],
)  # fmt: skip
def test_config_rejects_bad_values(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EstimatorConfig(**kwargs)  # type: ignore[arg-type]


def test_estimator_rejects_a_target_outside_the_batch_range() -> None:
    with pytest.raises(ValueError, match="target"):
        BatchSizeEstimator(8, target=9)


def test_settings_parse_as_written_on_the_command_line() -> None:
    assert EstimatorConfig.parse("alpha=0.5, window=4,cooldown_s=1") == EstimatorConfig(
        alpha=0.5, window=4, cooldown_s=1.0
    )
    default = EstimatorConfig()
    assert EstimatorConfig.parse("") == default
    assert EstimatorConfig.parse("window=2") == EstimatorConfig(
        alpha=default.alpha, window=2, cooldown_s=default.cooldown_s
    )
    config = EstimatorConfig(alpha=0.125, window=3, cooldown_s=0.5)
    assert EstimatorConfig.parse(config.describe()) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("windows=4", "NAME one of alpha, window, cooldown_s"),
        ("alpha", "write NAME=VALUE"),
        ("window=4.5", "window must be an integer, got '4.5'"),
        ("alpha=fast", "alpha must be a number"),
        ("alpha=0.5,alpha=0.25", "alpha given twice"),
        ("alpha=1.5", "alpha must be in"),
        ("cooldown_s=-1", "cooldown_s must be a finite number >= 0"),
        ("window=0", "window must be an int >= 1"),
    ],
)
def test_bad_settings_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EstimatorConfig.parse(text)
