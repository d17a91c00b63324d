"""Exact planning: the fastest set of instances for every core budget and batch size.

Problem: for a core budget T and a batch B, choose instances (t_j, b_j) from the profiled cells
with sum t_j <= T and sum b_j = B that minimize max_j L(t_j, b_j); among plans of equal latency
prefer fewer instances, then fewer cores.

How (two exact steps instead of the paper's O(T^2 B^2) recursion):

1. Latency, for every (c, b) at once. A plan with latency <= lam exists within c cores iff
   C_lam[b] <= c, where C_lam[b] is the fewest cores that cover b with pieces each run by the
   fewest threads t whose L(t, piece) <= lam. C_lam is a 1-D unbounded knapsack over b, computed
   for all thresholds lam (the distinct profiled latencies) in one vectorized sweep, and
   lam*(c, b) is the smallest lam with C_lam[b] <= c. This fills the whole table.
2. The plan, on lookup. At the fixed threshold lam*(c, b) every piece size has one cheapest
   thread count, so the tie-break (fewest instances, then fewest cores) is an additive 2-D
   knapsack solved exactly by a small DP with back-pointers, then memoized.

The tie-break cannot be folded into step 1: with a bottleneck objective a sub-plan with lower
latency but more instances may lose to one with higher (still hidden) latency and fewer
instances, so the lexicographic DP over (latency, instances, cores) is not exact.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

from packrat.errors import PlanError
from packrat.optimizer.table import LatencyTable
from packrat.types import InstanceSpec, Plan

_INF = np.int64(1) << np.int64(40)  # "no way": larger than any core or key sum we form
_CORE_BITS = np.int64(20)  # key = instances << 20 | cores; cores < 2**20


class PlanTable:
    """Optimal plans for every core budget c <= max_cores and batch b <= max_batch.

    Construction fills the latency table for all (c, b); `latency_ms(c, b)` is then a lookup and
    `plan(c, b)` rebuilds that optimum's instances (milliseconds, memoized).
    """

    def __init__(self, table: LatencyTable, max_cores: int, max_batch: int) -> None:
        if max_cores < 1:
            raise PlanError(f"cores must be >= 1, got {max_cores}")
        if max_batch < 1:
            raise PlanError(f"batch must be >= 1, got {max_batch}")
        self.table = table
        self.max_cores = max_cores
        self.max_batch = max_batch

        t_ok = np.array(table.threads) <= max_cores
        b_ok = np.array(table.batches) <= max_batch
        lat = table.latency_ms[np.ix_(t_ok, b_ok)]
        threads = np.array(table.threads)[t_ok]
        batches = np.array(table.batches)[b_ok]
        usable = np.isfinite(lat).any(axis=0)  # piece sizes with at least one profiled cell
        self._threads = threads
        self._pieces = batches[usable]
        lat = lat[:, usable]
        self._levels = np.unique(lat[np.isfinite(lat)])  # candidate latencies, ascending
        self._tmin = self._fewest_threads(lat, threads, self._levels)
        min_cores = self._min_cores(self._tmin, self._pieces, max_batch)
        self._level_index = self._first_feasible_level(min_cores, max_cores)
        levels_inf = np.append(self._levels, np.inf)
        self.latency_table_ms: npt.NDArray[np.float64] = levels_inf[self._level_index]
        self.latency_table_ms[:, 0] = 0.0
        self.plan = lru_cache(maxsize=4096)(self._plan)  # type: ignore[method-assign]

    # -- step 1 -----------------------------------------------------------------------------

    @staticmethod
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

    @staticmethod
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

    @staticmethod
    def _first_feasible_level(
        min_cores: npt.NDArray[np.int64], max_cores: int
    ) -> npt.NDArray[np.int64]:
        """index[c, b]: first level r with C[b, r] <= c (len(levels) if none).

        C[b, r] does not increase with r (a higher threshold admits more cells), so the
        feasible levels form a suffix and a binary search finds its start.
        """
        budgets = -np.arange(max_cores + 1, dtype=np.int64)
        out = np.empty((max_cores + 1, min_cores.shape[0]), dtype=np.int64)
        for b in range(min_cores.shape[0]):
            out[:, b] = np.searchsorted(-min_cores[b], budgets, side="left")
        return out

    # -- lookups ----------------------------------------------------------------------------

    def _check(self, cores: int, batch: int) -> None:
        if not 1 <= cores <= self.max_cores:
            raise PlanError(f"cores must be in 1..{self.max_cores} for this table, got {cores}")
        if not 1 <= batch <= self.max_batch:
            raise PlanError(f"batch must be in 1..{self.max_batch} for this table, got {batch}")

    def latency_ms(self, cores: int, batch: int) -> float:
        """Optimal predicted latency in ms (inf if no plan exists). A table lookup."""
        self._check(cores, batch)
        return float(self.latency_table_ms[cores, batch])

    def plan(self, cores: int, batch: int) -> Plan:  # replaced by a memoized bound method
        return self._plan(cores, batch)

    def _plan(self, cores: int, batch: int) -> Plan:
        """The optimal plan for `cores` and `batch`; PlanError if the cells cannot cover it."""
        self._check(cores, batch)
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
        instances = sorted(
            (InstanceSpec(threads=int(items_t[i]), batch=int(items_b[i])) for i in chosen),
            key=lambda s: (-s.threads, -s.batch),
        )
        return Plan(
            cores=cores,
            batch=batch,
            latency_ms=float(self._levels[level]),
            instances=tuple(instances),
        )


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


def optimize(table: LatencyTable, cores: int, batch: int) -> Plan:
    """The optimal plan for one (cores, batch); build a PlanTable to plan many batch sizes."""
    return PlanTable(table, cores, batch).plan(cores, batch)
