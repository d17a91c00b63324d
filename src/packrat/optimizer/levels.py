"""Exact planning on a table of some batch sizes only (a profile's grid, e.g. powers of two).

Plans may use only the table's batch sizes as pieces, so a batch of 3 on a grid of 1, 2, 4
is 2 + 1. Two exact steps instead of the paper's O(T^2 B^2) recursion:

1. Latency, for every (c, b) at once. A plan with latency <= lam exists within c cores iff
   C_lam[b] <= c, where C_lam[b] is the fewest cores that cover b with pieces each run by the
   fewest threads t whose L(t, piece) <= lam. C_lam is a 1-D unbounded knapsack over b, computed
   for all thresholds lam (the distinct latencies of the table) in one vectorized sweep, and
   lam*(c, b) is the smallest lam with C_lam[b] <= c. This fills the whole table, in
   O(B * pieces * levels): fast on a grid (T = 128, B = 1024, 11 batch sizes: about 20 ms),
   far too slow with every batch size as a piece (`packrat.optimizer.merge` does those).
2. The plan, on lookup. At the fixed threshold lam*(c, b) every piece size has one cheapest
   thread count, so the tie-break (fewest instances, then fewest cores) is an additive 2-D
   knapsack solved exactly by a small DP with back-pointers.

The tie-break cannot be folded into step 1: with a bottleneck objective a sub-plan with lower
latency but more instances may lose to one with higher (still hidden) latency and fewer
instances, so the lexicographic DP over (latency, instances, cores) is not exact.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from packrat.errors import PlanError
from packrat.types import InstanceSpec

_INF = np.int64(1) << np.int64(40)  # "no way": larger than any core or key sum we form
_CORE_BITS = np.int64(20)  # key = instances << 20 | cores; cores < 2**20


class LevelSolver:
    """Optimal latency for every (c <= max_cores, b <= max_batch) and, on request, the
    instances of one optimum, for a table whose batch sizes are the only pieces allowed.

    `lat` is (threads, pieces) in ms with NaN where a cell is absent; `threads` and `pieces`
    are increasing, every piece column has at least one finite cell.
    """

    def __init__(
        self,
        lat: npt.NDArray[np.float64],
        threads: npt.NDArray[np.int64],
        pieces: npt.NDArray[np.int64],
        max_cores: int,
        max_batch: int,
    ) -> None:
        self._threads = threads
        self._pieces = pieces
        self._levels = np.unique(lat[np.isfinite(lat)])  # candidate latencies, ascending
        self._tmin = _fewest_threads(lat, threads, self._levels)
        min_cores = _min_cores(self._tmin, pieces, max_batch)
        self._level_index = _first_feasible_level(min_cores, max_cores)
        levels_inf = np.append(self._levels, np.inf)
        self.latency_table_ms: npt.NDArray[np.float64] = levels_inf[self._level_index]
        self.latency_table_ms[:, 0] = 0.0

    def instances(self, cores: int, batch: int) -> tuple[float, list[InstanceSpec]]:
        """The optimal latency for (cores, batch) and the instances of a plan reaching it with
        the fewest instances, then the fewest cores; PlanError if no plan exists."""
        level = int(self._level_index[cores, batch])
        if level >= self._levels.size:
            raise PlanError(
                f"no plan covers batch {batch} within {cores} cores with the profiled cells "
                f"(batch sizes {list(map(int, self._pieces))}, "
                f"threads {list(map(int, self._threads))})"
            )
        threads = self._tmin[:, level]
        order = [g for g in np.argsort(-self._pieces, kind="stable") if threads[g] <= cores]
        items_t = threads[order]
        items_b = self._pieces[order]
        chosen = _fewest_instances(items_t, items_b, cores, batch)
        specs = [InstanceSpec(threads=int(items_t[i]), batch=int(items_b[i])) for i in chosen]
        return float(self._levels[level]), specs


def _fewest_threads(
    lat: npt.NDArray[np.float64],
    threads: npt.NDArray[np.int64],
    levels: npt.NDArray[np.float64],
) -> npt.NDArray[np.int64]:
    """tmin[g, r]: fewest threads t with L(t, piece g) <= levels[r] (_INF if none)."""
    n_levels = levels.size
    tmin = np.full((lat.shape[1], n_levels), _INF, dtype=np.int64)
    for g in range(lat.shape[1]):
        first = np.full(n_levels + 1, _INF, dtype=np.int64)
        for i in range(lat.shape[0]):
            if np.isfinite(lat[i, g]):
                r = int(np.searchsorted(levels, lat[i, g], side="left"))
                first[r] = min(first[r], threads[i])
        tmin[g] = np.minimum.accumulate(first)[:n_levels]
    return tmin


def _min_cores(
    tmin: npt.NDArray[np.int64], pieces: npt.NDArray[np.int64], max_batch: int
) -> npt.NDArray[np.int64]:
    """C[b, r]: fewest cores covering batch b with pieces at latency <= levels[r]."""
    cores = np.full((max_batch + 1, tmin.shape[1]), _INF, dtype=np.int64)
    cores[0] = 0
    for b in range(1, max_batch + 1):
        k = int(np.searchsorted(pieces, b, side="right"))  # pieces <= b
        if k == 0:
            continue
        cand = tmin[:k] + cores[b - pieces[:k]]
        cores[b] = np.minimum(cand.min(axis=0), _INF)
    return cores


def _first_feasible_level(
    min_cores: npt.NDArray[np.int64], max_cores: int
) -> npt.NDArray[np.int64]:
    """index[c, b]: first level r with C[b, r] <= c (len(levels) if none).

    C[b, r] does not increase with r (a higher threshold admits more cells), so the feasible
    levels form a suffix and a binary search finds its start.
    """
    budgets = -np.arange(max_cores + 1, dtype=np.int64)
    out = np.empty((max_cores + 1, min_cores.shape[0]), dtype=np.int64)
    for b in range(min_cores.shape[0]):
        out[:, b] = np.searchsorted(-min_cores[b], budgets, side="left")
    return out


def _fewest_instances(
    items_t: npt.NDArray[np.int64], items_b: npt.NDArray[np.int64], cores: int, batch: int
) -> list[int]:
    """Item indices (with repeats) covering `batch` within `cores`: fewest items, then cores.

    key[c, b] = instances << 20 | cores_used, the lexicographic optimum with at most c cores;
    adding an item adds (1, t), which preserves lexicographic order, so the DP is exact.
    """
    key = np.full((cores + 1, batch + 1), _INF, dtype=np.int64)
    key[:, 0] = 0
    choice = np.full((cores + 1, batch + 1), -1, dtype=np.int64)
    for c in range(1, cores + 1):
        row, pick = key[c], choice[c]
        for i, (t, b) in enumerate(zip(items_t, items_b, strict=True)):
            if t > c or b > batch:
                continue
            cand = key[c - t, : batch + 1 - b] + ((np.int64(1) << _CORE_BITS) + t)
            better = cand < row[b:]
            row[b:][better] = cand[better]
            pick[b:][better] = i
    if key[cores, batch] >= _INF:  # pragma: no cover - step 1 guarantees feasibility
        raise PlanError(f"internal: no plan at the optimal level for {cores} cores, batch {batch}")
    chosen: list[int] = []
    c, b = cores, batch
    while b > 0:
        i = int(choice[c, b])
        chosen.append(i)
        c -= int(items_t[i])
        b -= int(items_b[i])
    return chosen
