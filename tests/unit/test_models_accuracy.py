"""The accuracy check on crafted outputs: exact, perturbed, permuted top-1, budgets refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from packrat.errors import ModelError
from packrat.models.accuracy import (
    DEFAULT_BUDGET,
    EXACT_BUDGET,
    AccuracyBudget,
    check_accuracy,
    compare_outputs,
)
from packrat.models.base import Handler

LOGITS = np.array([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5], [1.0, 0.0, 4.0, 2.0]])


def test_identical_outputs_are_exact() -> None:
    report = compare_outputs(LOGITS, LOGITS.copy())
    assert report.rows == 3
    assert report.min_cosine == pytest.approx(1.0)
    assert report.max_abs_error == 0.0
    assert report.top1_agreement == 1.0
    assert report.within(EXACT_BUDGET) and report.failures(EXACT_BUDGET) == []


def test_a_small_perturbation_is_measured_and_within_the_default_budget() -> None:
    noisy = LOGITS.copy()
    noisy[1, 3] += 0.01
    report = compare_outputs(LOGITS, noisy)
    assert report.max_abs_error == pytest.approx(0.01)
    row = LOGITS[1]
    expected = row @ noisy[1] / (np.linalg.norm(row) * np.linalg.norm(noisy[1]))
    assert report.min_cosine == pytest.approx(expected)
    assert 0.9999 < report.min_cosine < 1.0
    assert report.top1_agreement == 1.0
    assert report.within(DEFAULT_BUDGET)
    assert not report.within(AccuracyBudget(min_cosine=0.0, max_abs_error=0.005))


def test_permuted_classes_change_top1_and_fail_the_budget() -> None:
    swapped = LOGITS.copy()
    swapped[2, [2, 3]] = swapped[2, [3, 2]]  # row 2's best class moves from 2 to 3
    report = compare_outputs(LOGITS, swapped)
    assert report.top1_agreement == pytest.approx(2 / 3)
    assert report.max_abs_error == pytest.approx(2.0)
    failures = report.failures(DEFAULT_BUDGET)
    assert any("top-1 agrees on 66.7% of rows" in f for f in failures)
    with pytest.raises(ModelError, match="the candidate is not accurate enough: .*top-1"):
        report.require(DEFAULT_BUDGET, "the candidate")


def test_an_opposite_output_fails_on_cosine() -> None:
    report = compare_outputs(LOGITS, -LOGITS)
    assert report.min_cosine == pytest.approx(-1.0)
    assert "cosine similarity -1.000000 is below 0.990000" in report.failures(DEFAULT_BUDGET)


def test_non_classifier_outputs_have_no_top1_and_zero_rows_are_similar() -> None:
    hidden = np.zeros((2, 4, 8))
    report = compare_outputs(hidden, hidden)
    assert report.top1_agreement is None
    assert report.min_cosine == 1.0  # both rows all zeros: identical, not undefined
    assert compare_outputs(hidden, hidden + 1.0).min_cosine == 0.0  # one zero, one not


def test_shapes_must_match_and_hold_rows() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        compare_outputs(LOGITS, LOGITS[:2])
    with pytest.raises(ValueError, match="at least one row"):
        compare_outputs(np.zeros((0, 4)), np.zeros((0, 4)))


def test_budget_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="min_cosine"):
        AccuracyBudget(min_cosine=1.5)
    with pytest.raises(ValueError, match="min_top1_agreement"):
        AccuracyBudget(min_cosine=0.9, min_top1_agreement=2.0)
    with pytest.raises(ValueError, match="max_abs_error"):
        AccuracyBudget(min_cosine=0.9, max_abs_error=-1.0)


class ScaledHandler(Handler):
    """Requests are numpy rows; the output is `rows * scale` (+ `shift` on the last row)."""

    def __init__(self, scale: float, shift: float = 0.0) -> None:
        self.scale = scale
        self.shift = shift

    def preprocess(self, requests: list[Any]) -> Any:
        return np.stack(requests)

    def inference(self, batch: Any) -> Any:
        out = batch * self.scale
        out[-1] += self.shift
        return out

    def postprocess(self, outputs: Any) -> list[Any]:
        return list(outputs)

    def example_requests(self, batch_size: int) -> list[Any]:
        rng = np.random.default_rng(0)
        return list(rng.standard_normal((batch_size, 5)))


def test_check_accuracy_runs_both_handlers_at_each_batch_size() -> None:
    report = check_accuracy(ScaledHandler(1.0), ScaledHandler(2.0), batch_sizes=(1, 3))
    assert report.rows == 4
    assert report.min_cosine == pytest.approx(1.0)  # same direction, twice as long
    assert report.max_abs_error > 0
    shifted = check_accuracy(ScaledHandler(1.0), ScaledHandler(1.0, shift=100.0), (2,))
    assert shifted.rows == 2 and shifted.min_cosine < 0.5
