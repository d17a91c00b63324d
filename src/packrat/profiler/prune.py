"""Which cells of a profiling sweep can be skipped without changing an optimal plan. No torch.

A sweep measures L(t, b) for t = 1..T and b in a batch grid, but the optimizer only ever needs
the cells that appear in an optimal plan for the batch sizes asked for. `CellPlanner` hands the
sweep one cell at a time (`next_cell`), learns each measured mean (`record`), and skips a cell
once measured cells prove that every plan containing it is slower than a plan already known.

Assumptions (pairwise, for b' <= b and t' <= t with t' = t or t' a *source* thread count,
the powers of two by default (`Scaling`), with `tolerance` eps, default 0):

    t * L(t, b)  >=  (1 - eps) * t' * L(t', b')

i.e. latency does not fall when the batch grows (same threads), and t threads are never more
than t/t' times faster than t' (no super-linear speed-up). Under them every unmeasured cell has
the lower bound LB(t, b) = (1 - eps) * max t' L(t', b') / t over such measured cells, and a
measured cell's bound is its latency. Sources are not every t' < t because the published GPT-2
and BERT profiles break that badly (see `Scaling`).

The rule. For an asked batch B, U(B) is the best plan latency using only measured cells (an
upper bound on the optimum), and R(c, r) is the optimal latency for batch r within c cores on the
table of lower bounds (a lower bound on the true optimum, because the optimum is monotone in every
cell). A plan for B containing cell (t, b) covers the rest B - b with T - t cores, so its latency
is at least max(LB(t, b), R(T - t, B - b)). The cell is skipped when that is > U(B) for every
asked B >= b: then no plan with it is optimal, not even one tied at the optimum, so the pruned
profile gives the same optimal latency (and the same instance and core counts) as the full one.
Cells with b above the largest asked batch are skipped outright. Decisions are final: U only
falls and the bounds only rise as cells are measured (given the assumptions).

Interpolation (`interpolate=True`, for a consumer that plans on `LatencyTable.interpolated()`,
as `packrat serve` does): interpolated pieces between grid points depend on both neighbours, and a
skipped cell inside a row would make the consumer interpolate across the gap with other values.
So each row's measured batch sizes stay contiguous: a cell is skipped only as part of the row's
prefix (every smaller grid batch skipped) or suffix (then the rest of the row goes too), after
checking the rule for every interpolated piece the skip removes. Interpolation is linear, so the
lower bound of a piece is the interpolation of its neighbours' bounds, and the grid batch at or
above the largest asked one is still needed.

The rule is exact when the assumptions hold; `violations` counts where a profile breaks them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from packrat.errors import ProfileError
from packrat.optimizer.solve import PlanTable
from packrat.optimizer.table import LatencyTable

Cell = tuple[int, int]  # (threads, batch)

# Bounds are shaved by this relative margin so float rounding (t'L'/t vs a table that meets the
# assumptions with equality) can never turn a tie into a skip.
_RTOL = 1e-9
# Stand-in lower bound for a cell nothing is known about: the optimizer needs positive latencies.
_NO_BOUND_MS = 1e-12


class Order(enum.Enum):
    """The order cells are offered in. Each row's batch sizes always come smallest first."""

    BATCH_MAJOR = "batch"  # every thread count at the smallest batch, then the next batch
    THREAD_MAJOR = "threads"  # all batch sizes of t = 1, then t = 2: one worker per t


class Scaling(enum.Enum):
    """Which thread counts t' bound the speed-up of larger ones (t L(t, b) >= t' L(t', b)).

    The published GPT-2 and BERT profiles have odd thread counts far slower than their even
    neighbours (GPT-2, b = 2: 3 threads 97 ms, 4 threads 48 ms, 4 x 48 < 0.7 x 3 x 97): from
    every t' the assumption fails by up to 71% there and pruned plans came out wrong. From
    powers of two it fails by at most 17% on the eleven published profiles, and pruning changed
    no optimal plan on any of them (docs/profile-cost.md).
    """

    ONE_THREAD = "one"  # t' = 1 only: the weakest assumption, the least pruning
    POWERS_OF_TWO = "pow2"  # t' in 1, 2, 4, 8, ...
    ANY = "any"  # every t' < t: the most pruning, broken by odd-thread slowdowns

    def sources(self, max_threads: int) -> npt.NDArray[np.bool_]:
        """Mask over t = 1..max_threads of the thread counts that bound larger ones."""
        rows = np.arange(1, max_threads + 1)
        if self is Scaling.ONE_THREAD:
            mask = rows == 1
        elif self is Scaling.POWERS_OF_TWO:
            mask = (rows & (rows - 1)) == 0
        else:
            mask = rows > 0
        out: npt.NDArray[np.bool_] = mask
        return out


class SkipReason(enum.Enum):
    ABOVE_ASKED = "batch above the largest batch size asked for (or its grid neighbour above)"
    NOT_OPTIMAL = "every plan containing it is slower than a plan already measured"


@dataclass(frozen=True)
class PruneConfig:
    """What a pruned sweep must preserve.

    cores: T; thread counts 1..T are swept and plans may use up to T cores.
    batches: the batch grid to profile (e.g. powers of two).
    asked: the batch sizes plans are wanted for (e.g. every B in 1..max_batch_size).
    interpolate: the consumer plans on the profile interpolated between grid batch sizes.
    order: the order cells are offered in (thread-major pruned more on the published profiles,
        and lets a sweep keep one worker per thread count).
    scaling: which thread counts bound the speed-up of larger ones (see `Scaling`).
    tolerance: eps of the assumptions (0.02 tolerates 2% super-linear speed-ups or batch dips).
    """

    cores: int
    batches: tuple[int, ...]
    asked: tuple[int, ...]
    interpolate: bool = False
    order: Order = Order.THREAD_MAJOR
    scaling: Scaling = Scaling.POWERS_OF_TWO
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ProfileError(f"PruneConfig.cores must be >= 1, got {self.cores}")
        for label, values in (("batches", self.batches), ("asked", self.asked)):
            if not values or any(v < 1 for v in values):
                raise ProfileError(f"PruneConfig.{label} must be positive ints, got {values}")
        if list(self.batches) != sorted(set(self.batches)):
            raise ProfileError(f"PruneConfig.batches must be increasing, got {self.batches}")
        if not 0 <= self.tolerance < 1:
            raise ProfileError(f"PruneConfig.tolerance must be in [0, 1), got {self.tolerance}")

    @property
    def threads(self) -> tuple[int, ...]:
        return tuple(range(1, self.cores + 1))

    @property
    def cells(self) -> list[Cell]:
        """Every cell of the full sweep, in the configured order."""
        if self.order is Order.BATCH_MAJOR:
            return [(t, b) for b in self.batches for t in self.threads]
        return [(t, b) for t in self.threads for b in self.batches]


@dataclass(frozen=True)
class Skip:
    """A cell the sweep does not measure, and why.

    For NOT_OPTIMAL: `lower_bound_ms` bounds any plan with the cell for `asked_batch`, the asked
    batch where the margin was smallest, and `best_ms` is the best plan measured for it then.
    """

    threads: int
    batch: int
    reason: SkipReason
    lower_bound_ms: float = math.nan
    best_ms: float = math.nan
    asked_batch: int = 0

    def describe(self) -> str:
        if self.reason is SkipReason.ABOVE_ASKED:
            return f"t={self.threads} b={self.batch}: {self.reason.value}"
        if not math.isfinite(self.lower_bound_ms):
            return f"t={self.threads} b={self.batch}: no plan for an asked batch can hold it"
        return (
            f"t={self.threads} b={self.batch}: any plan with it for B={self.asked_batch} takes "
            f">= {self.lower_bound_ms:.1f} ms, one measured takes {self.best_ms:.1f} ms"
        )


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
        self._bounds: _Bounds | None = None
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
        """The skips to make for cell (t, b) (it first), or [] if it must be measured."""
        k = int(np.searchsorted(self._grid, b))
        row = sorted(g for (tt, g) in self._measured if tt == t)
        if not self.config.interpolate:
            pieces = np.array([b], dtype=np.int64)
            rest: list[int] = []
        elif not any(g < b for g in row):  # prefix: pieces below the next grid batch go
            upper = self._grid[k + 1] - 1 if k + 1 < len(self._grid) else self._grid[-1]
            pieces = np.arange(self._grid[0], upper + 1, dtype=np.int64)
            rest = []
        elif not any(g > b for g in row):  # suffix: the rest of the row goes
            pieces = np.arange(row[-1] + 1, self._grid[-1] + 1, dtype=np.int64)
            rest = [int(g) for g in self._grid[k + 1 :]]
        else:  # measured on both sides: a gap would change the interpolation
            return []
        found = self._bound_check(t, pieces[pieces <= self._max_asked])
        if found is None:
            return []
        lower, best, asked_batch = found
        skips = [Skip(t, b, SkipReason.NOT_OPTIMAL, lower, best, asked_batch)]
        for g in rest:
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

    def _get_bounds(self) -> _Bounds:
        if self._bounds is None:
            self._bounds = _Bounds.build(self.config, self._measured, self._asked)
        return self._bounds


@dataclass(frozen=True)
class _Bounds:
    """What the measured cells prove: U per asked batch, cell lower bounds, R(c, r)."""

    best_ms: npt.NDArray[np.float64]  # U(B) for each asked B
    lower_ms: npt.NDArray[np.float64]  # LB(t, b) on the grid, (threads, grid)
    rest_lower_ms: npt.NDArray[np.float64]  # R(c, r), (cores + 1, max asked + 1)
    grid: npt.NDArray[np.int64]

    def piece_lower_ms(self, row: int, pieces: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Lower bounds of (interpolated) pieces of a row: its grid bounds, interpolated."""
        out: npt.NDArray[np.float64] = np.interp(pieces, self.grid, self.lower_ms[row])
        return out

    @classmethod
    def build(
        cls, config: PruneConfig, measured: Mapping[Cell, float], asked: npt.NDArray[np.int64]
    ) -> _Bounds:
        grid = np.array(config.batches, dtype=np.int64)
        max_asked = int(asked[-1])
        lat = np.full((config.cores, grid.size), np.nan)
        for (t, b), ms in measured.items():
            lat[t - 1, int(np.searchsorted(grid, b))] = ms
        lower = lower_bounds(lat, config.scaling, config.tolerance)
        threads = config.threads
        if config.interpolate:
            pieces = tuple(range(int(grid[0]), int(grid[-1]) + 1))
            rows = np.array([np.interp(pieces, grid, r) for r in lower])
            lower_table = LatencyTable(threads, pieces, rows)
            known_ms, known_batches = _interpolate_known(lat, grid, pieces), pieces
        else:
            lower_table = LatencyTable(threads, config.batches, lower)
            known_ms, known_batches = lat, config.batches
        rest = PlanTable(lower_table, config.cores, max_asked).latency_table_ms
        best = np.full(asked.size, np.inf)
        if np.isfinite(known_ms).any():
            known = LatencyTable(threads, known_batches, known_ms)
            best = PlanTable(known, config.cores, max_asked).latency_table_ms[config.cores, asked]
        return cls(best_ms=best, lower_ms=lower, rest_lower_ms=rest, grid=grid)


def lower_bounds(
    latency_ms: npt.NDArray[np.float64],
    scaling: Scaling = Scaling.POWERS_OF_TWO,
    tolerance: float = 0.0,
) -> npt.NDArray[np.float64]:
    """LB(t, b) for a (threads 1..T, grid) table with NaN where unmeasured; measured cells keep
    their latency. Under the module's assumptions every true latency is >= its bound."""
    threads = np.arange(1, latency_ms.shape[0] + 1, dtype=np.float64)[:, None]
    work = np.nan_to_num(latency_ms * threads, nan=0.0)  # core-ms; 0 = nothing known
    src = scaling.sources(latency_ms.shape[0])
    along_b = np.maximum.accumulate(work, axis=1)
    cross = np.maximum.accumulate(np.where(src[:, None], along_b, 0.0), axis=0)
    dominated = np.maximum(along_b, cross)
    bound = dominated / threads * (1.0 - tolerance) * (1.0 - _RTOL)
    out: npt.NDArray[np.float64] = np.where(
        np.isfinite(latency_ms), latency_ms, np.maximum(bound, _NO_BOUND_MS)
    )
    return out


def _interpolate_known(
    lat: npt.NDArray[np.float64], grid: npt.NDArray[np.int64], pieces: tuple[int, ...]
) -> npt.NDArray[np.float64]:
    """The interpolated table where it is already certain: measured grid cells, and pieces
    between two grid neighbours that are both measured (NaN elsewhere)."""
    out = np.full((lat.shape[0], len(pieces)), np.nan)
    first = pieces[0]
    for i, row in enumerate(lat):
        for j, g in enumerate(grid):
            if not np.isfinite(row[j]):
                continue
            out[i, g - first] = row[j]
            if j + 1 < grid.size and np.isfinite(row[j + 1]):
                span = np.arange(g, grid[j + 1] + 1)
                out[i, span - first] = np.interp(span, grid[j : j + 2], row[j : j + 2])
    return out


@dataclass(frozen=True)
class Violations:
    """Where a complete profile breaks the assumptions by more than the tolerance eps.

    batch_pairs: pairs (t, b' < b) with L(t, b) < (1 - eps) L(t, b'), of batch_pairs_checked.
    thread_pairs: pairs (t' < t, b), t' a source thread count of the scaling, with
        t L(t, b) < (1 - eps) t' L(t', b) (a super-linear speed-up), of thread_pairs_checked.
    worst_ratio: min of t L(t, b) / (t' L(t', b')) over the pairs the bounds use (t' = t or a
        source, t' <= t, b' <= b); the assumptions hold while it is >= 1 - eps.
    """

    batch_pairs: int
    batch_pairs_checked: int
    thread_pairs: int
    thread_pairs_checked: int
    worst_ratio: float


def violations(
    latency_ms: npt.NDArray[np.float64],
    scaling: Scaling = Scaling.POWERS_OF_TWO,
    tolerance: float = 0.0,
) -> Violations:
    """Check the assumptions on a (threads 1..T, grid) table, NaN where unmeasured."""
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
            rows = src[: i + 1].copy()
            rows[i] = True
            below = work[: i + 1, : j + 1][rows]
            ok = np.isfinite(below)
            ok[-1, -1] = False  # the cell itself
            if ok.any():
                worst = min(worst, float(work[i, j] / below[ok].max()))
            same_t = latency_ms[i, :j][np.isfinite(latency_ms[i, :j])]
            same_b = work[:i, j][src[:i] & np.isfinite(work[:i, j])]
            batch_n += same_t.size
            thread_n += same_b.size
            batch += int((latency_ms[i, j] < floor * same_t).sum())
            thread += int((work[i, j] < floor * same_b).sum())
    return Violations(batch, batch_n, thread, thread_n, worst)


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
