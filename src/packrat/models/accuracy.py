"""How far a candidate (another backend, a lower precision) strays from the fp32 torch model.

A faster kernel is only worth serving if it answers like the model it replaces. This module
compares the two on the same inputs: `compare_outputs` on arrays, `check_accuracy` on two
handlers run on the reference's example requests at a few batch sizes (which also catches a
converted graph that fixed the batch size). Pure numpy: outputs are read through
`numpy.asarray`, so nothing here imports torch or the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from packrat.errors import ModelError
from packrat.models.base import Handler

CHECK_BATCH_SIZES = (1, 3, 8)
"""Batch sizes `check_accuracy` runs: 12 rows in all, and batch 1 and odd sizes, where a graph
traced at one batch size goes wrong first."""


@dataclass(frozen=True)
class AccuracyBudget:
    """The largest error a candidate may show and still be served.

    min_cosine: the lowest cosine similarity between a reference row and a candidate row.
    min_top1_agreement: the lowest fraction of rows whose argmax agrees (classifier outputs
        only; ignored for others).
    max_abs_error: the largest elementwise |reference - candidate|; None to not check it,
        since what is large depends on the scale of the model's outputs.
    """

    min_cosine: float
    min_top1_agreement: float = 0.0
    max_abs_error: float | None = None

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"AccuracyBudget.min_cosine must be in [-1, 1], got {self.min_cosine}")
        if not 0.0 <= self.min_top1_agreement <= 1.0:
            raise ValueError(
                "AccuracyBudget.min_top1_agreement must be in [0, 1], "
                f"got {self.min_top1_agreement}"
            )
        if self.max_abs_error is not None and self.max_abs_error < 0:
            raise ValueError(f"AccuracyBudget.max_abs_error must be >= 0, got {self.max_abs_error}")


DEFAULT_BUDGET = AccuracyBudget(min_cosine=0.99, min_top1_agreement=0.9)
"""For lower-precision kernels (bf16). bf16 keeps 8 bits of mantissa, ~0.4% relative error per
operation, and a deep network's outputs typically stay at cosine > 0.995 of fp32's: below 0.99
something is broken, not merely rounded. Top-1 may flip on rows whose two best logits are
nearly tied (common with the zoo's random weights), so one flip in ten rows is tolerated."""

EXACT_BUDGET = AccuracyBudget(min_cosine=0.9999, min_top1_agreement=1.0)
"""For fp32 kernels of another runtime: they only sum in another order (errors ~1e-6 relative),
so anything short of near-identity means the conversion changed the model."""


@dataclass(frozen=True)
class AccuracyReport:
    """Candidate versus reference over `rows` output rows (one per request).

    min_cosine: the lowest per-row cosine similarity (rows flattened; 1.0 where both are 0).
    max_abs_error: the largest elementwise |reference - candidate|.
    top1_agreement: the fraction of rows whose argmax agrees, for classifier-shaped outputs
        ([rows, classes], classes > 1); None for any other shape.
    """

    rows: int
    min_cosine: float
    max_abs_error: float
    top1_agreement: float | None

    def failures(self, budget: AccuracyBudget) -> list[str]:
        """One sentence per limit of `budget` this report exceeds; empty if within it."""
        found = []
        if self.min_cosine < budget.min_cosine:
            found.append(
                f"cosine similarity {self.min_cosine:.6f} is below {budget.min_cosine:.6f}"
            )
        if self.top1_agreement is not None and self.top1_agreement < budget.min_top1_agreement:
            found.append(
                f"top-1 agrees on {self.top1_agreement:.1%} of rows, below "
                f"{budget.min_top1_agreement:.1%}"
            )
        if budget.max_abs_error is not None and self.max_abs_error > budget.max_abs_error:
            found.append(
                f"max absolute error {self.max_abs_error:.3g} exceeds {budget.max_abs_error:.3g}"
            )
        return found

    def within(self, budget: AccuracyBudget) -> bool:
        """True if no limit of `budget` is exceeded."""
        return not self.failures(budget)

    def summary(self) -> str:
        """One line with every number, e.g. for a log or a refusal message."""
        top1 = "n/a" if self.top1_agreement is None else f"{self.top1_agreement:.1%}"
        return (
            f"{self.rows} rows: min cosine {self.min_cosine:.6f}, max abs error "
            f"{self.max_abs_error:.3g}, top-1 agreement {top1}"
        )

    def require(self, budget: AccuracyBudget, what: str) -> None:
        """ModelError naming `what` and every exceeded limit, unless within `budget`."""
        failures = self.failures(budget)
        if failures:
            raise ModelError(
                f"{what} is not accurate enough: {'; '.join(failures)} ({self.summary()})"
            )


def compare_outputs(reference: Any, candidate: Any) -> AccuracyReport:
    """Compare two batch-first outputs of the same shape (arrays, or anything `np.asarray`
    reads, such as CPU torch tensors); ValueError if their shapes differ or they are empty."""
    want = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if want.shape != got.shape:
        raise ValueError(f"output shapes differ: reference {want.shape}, candidate {got.shape}")
    if want.ndim == 0 or want.shape[0] == 0:
        raise ValueError(f"outputs must hold at least one row, got shape {want.shape}")
    rows = want.shape[0]
    flat_want, flat_got = want.reshape(rows, -1), got.reshape(rows, -1)
    top1 = None
    if want.ndim == 2 and want.shape[1] > 1:
        top1 = float(np.mean(flat_want.argmax(axis=1) == flat_got.argmax(axis=1)))
    return AccuracyReport(
        rows=rows,
        min_cosine=float(np.min(_row_cosines(flat_want, flat_got))),
        max_abs_error=float(np.max(np.abs(want - got))) if want.size else 0.0,
        top1_agreement=top1,
    )


def check_accuracy(
    reference: Handler,
    candidate: Handler,
    batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
) -> AccuracyReport:
    """Run both handlers on the reference's example requests at each batch size and compare
    every output row.

    Both handlers must be initialized and take the same requests. Raises ModelError if either
    fails or their outputs differ in count or shape.
    """
    want: list[np.ndarray] = []
    got: list[np.ndarray] = []
    for batch_size in batch_sizes:
        requests = reference.example_requests(batch_size)
        expected = reference.handle(requests)
        actual = candidate.handle(requests)
        for row, (a, b) in enumerate(zip(expected, actual, strict=True)):
            a_array, b_array = np.asarray(a), np.asarray(b)
            if a_array.shape != b_array.shape:
                raise ModelError(
                    f"at batch size {batch_size}, output {row} has shape {list(b_array.shape)}; "
                    f"the reference's has {list(a_array.shape)}"
                )
            want.append(a_array)
            got.append(b_array)
    return compare_outputs(np.stack(want), np.stack(got))


def _row_cosines(want: np.ndarray, got: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1)
    dots = np.einsum("ij,ij->i", want, got)
    both_zero = (np.linalg.norm(want, axis=1) == 0) & (np.linalg.norm(got, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosines = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    result: np.ndarray = np.where(both_zero, 1.0, cosines)
    return result
