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

The modules: `config` (what a sweep must preserve, and a skip), `planner` (`CellPlanner`: the
rule), `bounds` (U, LB and R from the measured cells), `check` (complete profiles: violations of
the assumption, and a sweep replayed).
"""

from packrat.profiler.prune.bounds import lower_bounds
from packrat.profiler.prune.check import SweepReplay, Violations, replay_sweep, violations
from packrat.profiler.prune.config import Cell, Order, PruneConfig, Scaling, Skip, SkipReason
from packrat.profiler.prune.planner import CellPlanner

__all__ = [
    "Cell",
    "CellPlanner",
    "Order",
    "PruneConfig",
    "Scaling",
    "Skip",
    "SkipReason",
    "SweepReplay",
    "Violations",
    "lower_bounds",
    "replay_sweep",
    "violations",
]
