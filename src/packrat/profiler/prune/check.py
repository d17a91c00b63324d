"""Pruning checked against complete profiles: where a profile breaks the assumption and what
that can cost (`violations`), and a pruned sweep replayed against known latencies to count what
it would measure (`replay_sweep`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from packrat.errors import ProfileError
from packrat.optimizer.table import LatencyTable
from packrat.profiler.prune.config import Cell, PruneConfig, Scaling, Skip
from packrat.profiler.prune.planner import CellPlanner


@dataclass(frozen=True)
class Violations:
    """Where a complete profile breaks the assumption by more than the tolerance eps.

    batch_pairs: pairs (t, b' < b) with L(t, b) < (1 - eps) L(t, b'), of batch_pairs_checked.
        Batch dips cost pruning nothing (the optimizer plans on each row's running maximum);
        counted to show how noisy a profile is.
    thread_pairs: pairs (t' < t, b), t' a source thread count of the scaling, with
        t L(t, b) < (1 - eps) t' L(t', b) (a super-linear speed-up), of thread_pairs_checked.
    worst_ratio: 1 - v, the min of t L(t, b) / (t' L(t', b')) over sources t' < t and
        b' <= b; the assumption holds while it is >= 1 - eps (inf: no such pair).
    tolerance: eps.
    """

    batch_pairs: int
    batch_pairs_checked: int
    thread_pairs: int
    thread_pairs_checked: int
    worst_ratio: float
    tolerance: float = 0.0

    @property
    def loss_bound(self) -> float:
        """The most a pruned sweep's optimal latency can exceed the full profile's, as a factor
        (1.0: pruning is exact): max(1, (1 - eps) / worst_ratio)."""
        return max(1.0, (1.0 - self.tolerance) / self.worst_ratio)


def violations(
    latency_ms: npt.NDArray[np.float64],
    scaling: Scaling = Scaling.POWERS_OF_TWO,
    tolerance: float = 0.0,
) -> Violations:
    """Check the assumption on a (threads 1..T, grid) table, NaN where unmeasured."""
    threads = np.arange(1, latency_ms.shape[0] + 1, dtype=np.float64)[:, None]
    work = latency_ms * threads
    src = scaling.sources(latency_ms.shape[0])
    floor = 1.0 - tolerance
    batch = thread = batch_n = thread_n = 0
    worst = math.inf
    n_t, n_b = latency_ms.shape
    for i in range(n_t):
        for j in range(n_b):
            if not np.isfinite(work[i, j]):
                continue
            below = work[:i, : j + 1][src[:i]]  # sources t' < t, b' <= b
            below = below[np.isfinite(below)]
            if below.size:
                worst = min(worst, float(work[i, j] / below.max()))
            same_t = latency_ms[i, :j][np.isfinite(latency_ms[i, :j])]
            same_b = work[:i, j][src[:i] & np.isfinite(work[:i, j])]
            batch_n += same_t.size
            thread_n += same_b.size
            batch += int((latency_ms[i, j] < floor * same_t).sum())
            thread += int((work[i, j] < floor * same_b).sum())
    return Violations(batch, batch_n, thread, thread_n, worst, tolerance)


@dataclass(frozen=True)
class SweepReplay:
    """A pruned sweep replayed against a complete table: what it measured and skipped."""

    measured: dict[Cell, float]
    skipped: tuple[Skip, ...]

    def table(self) -> LatencyTable:
        """The pruned profile as the optimizer's table."""
        return LatencyTable.from_cells(self.measured)


def replay_sweep(config: PruneConfig, latency_ms: Mapping[Cell, float]) -> SweepReplay:
    """Run a CellPlanner against known latencies (a published or earlier profile), to count
    what a pruned sweep would measure. ProfileError if it asks for a cell the table lacks."""
    planner = CellPlanner(config)
    while (cell := planner.next_cell()) is not None:
        if cell not in latency_ms:
            raise ProfileError(f"the table has no cell t={cell[0]} b={cell[1]}")
        planner.record(*cell, latency_ms[cell])
    return SweepReplay(planner.measured, planner.skipped)
