"""The pruned sweep's planner: `CellPlanner` offers the cells in the configured order and
skips a cell (with the rest of its row) once the bounds (`packrat.profiler.prune.bounds`) prove
no optimal plan for an asked batch can hold it. The rule and what it guarantees:
`packrat.profiler.prune`."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from packrat.errors import ProfileError
from packrat.profiler.prune.bounds import Bounds
from packrat.profiler.prune.config import Cell, PruneConfig, Skip, SkipReason


class CellPlanner:
    """Chooses the next cell to measure, skipping those no optimal plan can contain.

        planner = CellPlanner(config, measured=already_in_profile)
        while (cell := planner.next_cell()) is not None:
            planner.record(*cell, measure(*cell))

    `measured` seeds cells already known (a resumed profile). Costs a few optimizer table builds
    per measured cell: milliseconds for the paper's grid, negligible beside any measurement.
    """

    def __init__(self, config: PruneConfig, measured: Mapping[Cell, float] | None = None) -> None:
        self.config = config
        self._grid = np.array(config.batches, dtype=np.int64)
        self._max_asked = max(config.asked)
        # Above this a grid batch is never needed; interpolation up to the largest asked batch
        # needs the grid batch at or above it.
        k = min(int(np.searchsorted(self._grid, self._max_asked)), self._grid.size - 1)
        self._max_useful = int(self._grid[k]) if config.interpolate else self._max_asked
        self._asked = np.array(sorted(set(config.asked)), dtype=np.int64)
        self._order = config.cells
        self._cursor = 0
        self._measured: dict[Cell, float] = {}
        self._skipped: dict[Cell, Skip] = {}
        self._bounds: Bounds | None = None
        for (t, b), ms in (measured or {}).items():
            if t <= config.cores and b in config.batches:
                self.record(t, b, ms)

    @property
    def measured(self) -> dict[Cell, float]:
        """{(threads, batch): mean latency in ms} of every recorded cell."""
        return dict(self._measured)

    @property
    def skipped(self) -> tuple[Skip, ...]:
        """Cells decided not to measure, in the order decided."""
        return tuple(self._skipped.values())

    @property
    def undecided(self) -> int:
        """Cells neither measured nor skipped yet: at most this many measurements remain."""
        return len(self._order) - len(self._measured) - len(self._skipped)

    def record(self, threads: int, batch: int, mean_ms: float) -> None:
        """Learn a measured mean latency (ms) of a grid cell."""
        if not 1 <= threads <= self.config.cores or batch not in self.config.batches:
            raise ProfileError(f"cell t={threads} b={batch} is not in this sweep's grid")
        if not (math.isfinite(mean_ms) and mean_ms > 0):
            raise ProfileError(f"cell t={threads} b={batch}: latency must be > 0 ms, got {mean_ms}")
        self._skipped.pop((threads, batch), None)
        self._measured[(threads, batch)] = float(mean_ms)
        self._bounds = None

    def next_cell(self) -> Cell | None:
        """The next cell to measure, or None when every cell is measured or skipped.

        Returns the same cell until it is recorded.
        """
        while self._cursor < len(self._order):
            cell = self._order[self._cursor]
            if cell in self._measured or cell in self._skipped:
                self._cursor += 1
                continue
            t, b = cell
            if b > self._max_useful:
                self._skipped[cell] = Skip(t, b, SkipReason.ABOVE_ASKED)
                continue
            skips = self._try_skip(t, b)
            if not skips:
                return cell
            for skip in skips:
                self._skipped[(skip.threads, skip.batch)] = skip
        return None

    # -- the rule -----------------------------------------------------------------------------

    def _try_skip(self, t: int, b: int) -> list[Skip]:
        """The skips to make for cell (t, b): it and the rest of its row, or [] if it must be
        measured."""
        row = [g for (tt, g) in self._measured if tt == t]
        if any(g > b for g in row):  # a skip takes the row's suffix; this one is measured
            return []
        if self.config.interpolate:  # every piece above the row's last measured batch
            start = max(row) + 1 if row else 1
            pieces = np.arange(start, self._grid[-1] + 1, dtype=np.int64)
        else:
            pieces = self._grid[self._grid >= b]
        found = self._bound_check(t, pieces[pieces <= self._max_asked])
        if found is None:
            return []
        lower, best, asked_batch = found
        skips = []
        for g in (int(g) for g in self._grid[self._grid >= b]):
            if (t, g) not in self._skipped:
                reason = SkipReason.NOT_OPTIMAL if g <= self._max_useful else SkipReason.ABOVE_ASKED
                skips.append(Skip(t, g, reason, lower, best, asked_batch))
        return skips

    def _bound_check(
        self, t: int, pieces: npt.NDArray[np.int64]
    ) -> tuple[float, float, int] | None:
        """(bound, best, B) at the tightest asked B if no plan with a piece of row t in `pieces`
        can be optimal for any asked B; None otherwise."""
        bounds = self._get_bounds()
        best_at = bounds.best_ms  # per asked batch
        piece_lb = bounds.piece_lower_ms(t - 1, pieces)
        rest_lb = bounds.rest_lower_ms[self.config.cores - t]
        remain = self._asked[None, :] - pieces[:, None]  # (pieces, asked)
        usable = remain >= 0
        if not usable.any():  # no asked batch is large enough for any of the pieces
            return math.inf, math.nan, 0
        plan_lb = np.maximum(piece_lb[:, None], rest_lb[np.where(usable, remain, 0)])
        # inf: no plan for that B can hold the piece at all (the rest does not fit the cores).
        beaten = ~usable | np.isposinf(plan_lb) | (plan_lb > best_at[None, :])
        if not beaten.all():
            return None
        finite = usable & np.isfinite(plan_lb)  # then best_at is finite too, as it is beaten
        margin = np.where(finite, plan_lb - np.where(finite, best_at[None, :], 0.0), np.inf)
        if not np.isfinite(margin).any():
            return math.inf, math.nan, 0
        i, j = np.unravel_index(int(np.argmin(margin)), margin.shape)
        return float(plan_lb[i, j]), float(best_at[j]), int(self._asked[j])

    def _get_bounds(self) -> Bounds:
        if self._bounds is None:
            self._bounds = Bounds.build(self.config, self._measured, self._asked)
        return self._bounds
