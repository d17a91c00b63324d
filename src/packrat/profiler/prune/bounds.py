"""What the measured cells of a pruned sweep prove (`packrat.profiler.prune` gives the
argument): U(B), the best plan measured for each asked batch; the lower-bound table LB, from
each row's smaller batches and, under the assumption, from the source thread counts; and R(c, r),
the optimal latency on LB within c cores. All numpy over (threads, batch) tables; no torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from packrat.optimizer.solve import PlanTable
from packrat.optimizer.table import LatencyTable
from packrat.profiler.prune.config import Cell, PruneConfig, Scaling

# Bounds are shaved by this relative margin so float rounding (t'L'/t vs a table that meets the
# assumptions with equality) can never turn a tie into a skip.
_RTOL = 1e-9
# Stand-in lower bound for a cell nothing is known about: the optimizer needs positive latencies.
_NO_BOUND_MS = 1e-12


@dataclass(frozen=True)
class Bounds:
    """What the measured cells prove: U per asked batch, the lower-bound table LB, R(c, r)."""

    best_ms: npt.NDArray[np.float64]  # U(B) for each asked B
    lower_ms: npt.NDArray[np.float64]  # LB, (threads, pieces)
    rest_lower_ms: npt.NDArray[np.float64]  # R(c, r), (cores + 1, max asked + 1)
    pieces: npt.NDArray[np.int64]  # the batch sizes planned on: the grid, or 1..its largest

    def piece_lower_ms(self, row: int, pieces: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """LB of some of a row's pieces."""
        out: npt.NDArray[np.float64] = self.lower_ms[row, np.searchsorted(self.pieces, pieces)]
        return out

    @classmethod
    def build(
        cls, config: PruneConfig, measured: Mapping[Cell, float], asked: npt.NDArray[np.int64]
    ) -> Bounds:
        grid = np.array(config.batches, dtype=np.int64)
        max_asked = int(asked[-1])
        lat = np.full((config.cores, grid.size), np.nan)
        for (t, b), ms in measured.items():
            lat[t - 1, int(np.searchsorted(grid, b))] = ms
        cell_lower = _cell_lower_bounds(lat, config.scaling, config.tolerance, config.adapt)
        leading = _leading_runs(lat)
        if config.interpolate:
            pieces = np.arange(1, grid[-1] + 1, dtype=np.int64)
            # Interpolate first, then the running maximum: the consumer's order (a row's
            # running maximum interpolated could exceed its interpolation's running maximum).
            rows = np.array([np.interp(pieces, grid, r) for r in cell_lower])
            lower = np.maximum.accumulate(rows, axis=1)
            known_ms = _interpolate_known(leading, grid, pieces)
        else:
            pieces = grid
            lower = np.maximum.accumulate(cell_lower, axis=1)
            known_ms = leading
        threads, batches = config.threads, tuple(int(p) for p in pieces)
        rest = PlanTable(LatencyTable(threads, batches, lower), config.cores, max_asked)
        best = np.full(asked.size, np.inf)
        if np.isfinite(known_ms).any():
            known = LatencyTable(threads, batches, known_ms)
            best = PlanTable(known, config.cores, max_asked).latency_table_ms[config.cores, asked]
        return cls(best_ms=best, lower_ms=lower, rest_lower_ms=rest.latency_table_ms, pieces=pieces)


def lower_bounds(
    latency_ms: npt.NDArray[np.float64],
    scaling: Scaling = Scaling.POWERS_OF_TWO,
    tolerance: float = 0.0,
    adapt: bool = True,
) -> npt.NDArray[np.float64]:
    """LB(t, b) for a (threads 1..T, grid) table with NaN where unmeasured: lower bounds on the
    table the optimizer plans on (each row's running maximum over b). A measured cell's is its
    row's running maximum; an unmeasured cell's is the larger of that (over its row's measured
    smaller batches) and the bound from source thread counts. Under the module's assumption
    (with `adapt`, at each source pair's tolerance) every planned latency is >= its bound."""
    cell_lower = _cell_lower_bounds(latency_ms, scaling, tolerance, adapt)
    out: npt.NDArray[np.float64] = np.maximum.accumulate(cell_lower, axis=1)
    return out


def _cell_lower_bounds(
    latency_ms: npt.NDArray[np.float64], scaling: Scaling, tolerance: float, adapt: bool
) -> npt.NDArray[np.float64]:
    """LB0: measured cells keep their latency; an unmeasured (t, b) gets
    max (1 - e(t', t)) t' L(t', b') / t over measured cells of sources t' < t with b' <= b."""
    n_t = latency_ms.shape[0]
    threads = np.arange(1, n_t + 1, dtype=np.float64)
    work = latency_ms * threads[:, None]  # core-ms, NaN where unmeasured
    seen = np.fmax.accumulate(work, axis=1)  # max over b' <= b; NaN before a row's first cell
    rows = np.arange(n_t)
    pairs = scaling.sources(n_t)[:, None] & (rows[:, None] < rows[None, :])  # [t', t]
    keep = 1.0 - _pair_tolerance(work, seen, tolerance, adapt)
    from_source = np.where(pairs[:, :, None], keep[:, :, None] * seen[:, None, :], np.nan)
    cross = np.nan_to_num(np.fmax.reduce(from_source, axis=0), nan=0.0)  # (t, b)
    bound = cross / threads[:, None] * (1.0 - _RTOL)
    out: npt.NDArray[np.float64] = np.where(
        np.isfinite(latency_ms), latency_ms, np.maximum(bound, _NO_BOUND_MS)
    )
    return out


def _pair_tolerance(
    work: npt.NDArray[np.float64], seen: npt.NDArray[np.float64], tolerance: float, adapt: bool
) -> npt.NDArray[np.float64]:
    """e(t', t): eps, or with `adapt` the larger of eps and the violation the measured cells of
    rows t' and t show, 1 - min over them of t L(t, b) / (t' L(t', b')) with b' <= b."""
    out = np.full((work.shape[0], work.shape[0]), tolerance)
    if adapt:
        ratio = work[None, :, :] / seen[:, None, :]  # [t', t, b]: t L(t, b) / max t' L(t', b')
        worst = np.fmin.reduce(ratio, axis=2)  # NaN where no pair was measured
        out = np.where(np.isfinite(worst), np.maximum(out, 1.0 - worst), out)
    return out


def _leading_runs(lat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each row's measured cells up to its first unmeasured one (NaN after): what a pruned
    profile keeps for certain, since the rest of its row may yet be skipped."""
    run = np.logical_and.accumulate(np.isfinite(lat), axis=1)
    out: npt.NDArray[np.float64] = np.where(run, lat, np.nan)
    return out


def _interpolate_known(
    lat: npt.NDArray[np.float64], grid: npt.NDArray[np.int64], pieces: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """The interpolated table where it is already certain: measured grid cells, and pieces
    between two grid neighbours that are both measured (NaN elsewhere)."""
    out = np.full((lat.shape[0], pieces.size), np.nan)
    first = int(pieces[0])
    for i, row in enumerate(lat):
        for j, g in enumerate(grid):
            if not np.isfinite(row[j]):
                continue
            out[i, g - first] = row[j]
            if j + 1 < grid.size and np.isfinite(row[j + 1]):
                span = np.arange(g, grid[j + 1] + 1)
                out[i, span - first] = np.interp(span, grid[j : j + 2], row[j : j + 2])
    return out
