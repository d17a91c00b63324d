"""Which cells of a profiling sweep can be skipped without changing an optimal plan. No torch.

A sweep measures L(t, b) for t = 1..T and b in a batch grid, but the optimizer only ever needs
the cells that appear in an optimal plan for the batch sizes asked for. `CellPlanner` hands the
sweep one cell at a time (`next_cell`), learns each measured mean (`record`), and skips a cell
once measured cells prove that every plan containing it is slower than a plan already known.

What is planned on. `PlanTable` plans on `LatencyTable.monotone_in_batch()`: each row made
non-decreasing in the batch by a running maximum (after `interpolated()` when the consumer
interpolates, as `packrat serve` does). A skip takes a row's *suffix*: the cell and every larger
grid batch of its row, so each row's measured cells are its smallest grid batches. Running
maxima and interpolation between neighbours of a row prefix are the prefix of those of the row,
so the pruned profile plans on the full profile's planning table F with cells removed: its
optimum is never below the full one, and F is non-decreasing in b without any assumption. (A
skipped cell inside a row would break that: where latency dips as b grows, the full profile's
running maximum carries the skipped cell's latency into larger batches and the pruned one's
does not, so the pruned optimum could come out below the full one.)

The assumption, for a *source* thread count t' < t (the powers of two by default, `Scaling`),
grid batches b' <= b, and `tolerance` eps (default 0):

    t * L(t, b)  >=  (1 - eps) * t' * L(t', b')

i.e. t threads are never more than t/t' times faster than t' (no super-linear speed-up). Sources
are not every t' < t because the published GPT-2 and BERT profiles break that badly (see
`Scaling`). Under it an unmeasured cell has L(t, b) >= LB0(t, b) = (1 - eps) max t' L(t', b') / t
over measured cells of sources t' < t with b' <= b; a measured cell's LB0 is its latency. The
lower-bound table LB is LB0 put through what the consumer does (interpolation, then the running
maximum); both keep order, so LB <= F, and the running maximum gives the same-row bound (a cell
is at least what its row measured at a smaller batch) with no assumption.

The rule. For an asked batch B, U(B) is the optimal latency planned on the measured cells (an
upper bound on the pruned optimum: cells are only added), and R(c, r) is the optimal latency for
batch r within c cores on LB (a lower bound on the full optimum, because the optimum is monotone
in every cell). A plan for B containing a piece p of row t covers the rest B - p with T - t
cores, so its latency is at least max(LB(t, p), R(T - t, B - p)). Cell (t, b) is skipped, with
the rest of its row, when that is > U(B) for every piece p the skip removes and every asked
B >= p. Cells with b above the largest asked batch are skipped outright.

What it guarantees. Let v be how far the profile breaks the assumption: the smallest v >= 0 with
t L(t, b) >= (1 - v) t' L(t', b') for every source t' < t and grid b' <= b (`violations` gives
worst_ratio = 1 - v). For every asked B, with OPT(B) the optimal latency planned on the full
profile and P(B) on the pruned one:

    OPT(B)  <=  P(B)  <=  OPT(B) * max(1, (1 - eps) / (1 - v))

So P(B) = OPT(B) when v <= eps, and then every optimal plan keeps all its cells, so the tie-break
picks the same instance and core counts too. Why: with k = min(1, (1 - v) / (1 - eps)), every
true cell is >= k LB0, hence F >= k LB and the full optimum within c cores for r is
>= k R(c, r). If an optimal plan for B holds a piece p skipped when the bounds were LB, R and U,
then OPT(B) >= k max(LB(t, p), R(T - t, B - p)) > k U(B) >= k P(B); for k = 1 that contradicts
P(B) >= OPT(B). The published profiles have v <= 12% from powers of two (docs/profile-cost.md).

Adapting (`adapt`, on by default). Measured cells can show a violation: once a pair (t', t)
has measured cells with t L(t, b) < (1 - eps) t' L(t', b'), b' <= b, it bounds t's unmeasured
cells with its own tolerance e(t', t) = 1 - min t L(t, b) / (t' L(t', b')) over its measured
cells instead of eps, for every decision after that. A profile whose measured cells reveal
super-linear scaling is thus pruned less. Decisions are final: a sweep does not go back to a
skipped cell (thread by thread, that thread count's workers are gone), and a skip proven under
the assumption stays proven as more cells are measured (U only falls). So adapting cannot undo
a skip made before the violating cells were measured. What it adds: the argument above holds
per decision with each pair's tolerance at the time, and tolerances only rise. So
P(B) = OPT(B) when, at the first NOT_OPTIMAL skip, each pair's tolerance already covered the
pair's violation v(t', t) over the whole profile (e.g. a resumed profile showed it), and in
general P(B) <= OPT(B) * max(1, max over pairs (1 - e(t', t)) / (1 - v(t', t))) with e(t', t)
the pair's tolerance at that first skip, which is never more than the bound above.

Interpolation (`interpolate=True`, for a consumer that plans on `LatencyTable.interpolated()`):
the pieces a skip removes are every batch above the row's last measured one (from 1 when the row
has none: the running maximum fills the batches below the smallest grid batch); a piece's LB0 is
the interpolation of its neighbours' (interpolation is linear, so it keeps order); and the grid
batch at or above the largest asked one is still needed.

A resumed profile may have rows with gaps (measured by another rule): U then plans on each row's
leading run of measured batches only, and the gaps are measured, since a skip cannot leave a
measured cell above it.
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
    tolerance: eps of the assumption (0.02 tolerates 2% super-linear speed-ups).
    adapt: a source pair whose measured cells break the assumption by more than eps bounds
        later decisions with the violation it showed as its tolerance (the module docstring
        says what that guarantees).
    """

    cores: int
    batches: tuple[int, ...]
    asked: tuple[int, ...]
    interpolate: bool = False
    order: Order = Order.THREAD_MAJOR
    scaling: Scaling = Scaling.POWERS_OF_TWO
    tolerance: float = 0.0
    adapt: bool = True

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

    For NOT_OPTIMAL: `lower_bound_ms` bounds any plan for `asked_batch` holding the cell or a
    larger batch of its row (the skip takes them all), at the asked batch and piece where the
    margin was smallest, and `best_ms` is the best plan measured for it then.
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

    def _get_bounds(self) -> _Bounds:
        if self._bounds is None:
            self._bounds = _Bounds.build(self.config, self._measured, self._asked)
        return self._bounds


@dataclass(frozen=True)
class _Bounds:
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
    ) -> _Bounds:
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
