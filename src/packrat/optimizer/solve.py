"""Exact planning: the fastest set of instances for every core budget and batch size.

Problem: for a core budget T and a batch B, choose instances (t_j, b_j) with sum t_j <= T and
sum b_j = B that minimize max_j L(t_j, b_j); among plans of equal latency prefer fewer
instances, then fewer cores.

L is the profile made non-decreasing in the batch on each thread count
(`LatencyTable.monotone_in_batch`): a larger batch is never taken to run faster than a smaller
one on the same threads, so a noisy cell that measured fast is not picked for its noise. The
plans are exact on that table. Where the profile already is non-decreasing (nearly every cell
of the published and of our profiles), that is the profile itself.

Two solvers, by the table's batch sizes:

- every size 1..N (the profile interpolated, as `packrat serve` and `packrat simulate` plan):
  `packrat.optimizer.merge`, O(T * threads * B);
- some sizes only (a grid, as `packrat plan` reads a profile): `packrat.optimizer.levels`,
  where pieces are the grid's sizes, O(B * sizes * levels).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import numpy as np
import numpy.typing as npt

from packrat.errors import PlanError
from packrat.optimizer.levels import LevelSolver
from packrat.optimizer.merge import MergeSolver
from packrat.optimizer.table import LatencyTable
from packrat.types import InstanceSpec, Plan


class _Solver(Protocol):
    latency_table_ms: npt.NDArray[np.float64]

    def instances(self, cores: int, batch: int) -> tuple[float, list[InstanceSpec]]: ...


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
        self.planned = table.monotone_in_batch()
        self._solver = _solver(self.planned, max_cores, max_batch)
        self.latency_table_ms: npt.NDArray[np.float64] = self._solver.latency_table_ms
        self.plan = lru_cache(maxsize=4096)(self._plan)  # type: ignore[method-assign]

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
        latency, instances = self._solver.instances(cores, batch)
        return Plan(
            cores=cores,
            batch=batch,
            latency_ms=latency,
            instances=tuple(sorted(instances, key=lambda s: (-s.threads, -s.batch))),
        )


def _solver(table: LatencyTable, max_cores: int, max_batch: int) -> _Solver:
    """The solver for `table`'s cells with at most `max_cores` threads and `max_batch`."""
    t_ok = np.array(table.threads) <= max_cores
    b_ok = np.array(table.batches) <= max_batch
    lat = table.latency_ms[np.ix_(t_ok, b_ok)]
    threads = np.array(table.threads, dtype=np.int64)[t_ok]
    batches = np.array(table.batches, dtype=np.int64)[b_ok]
    usable = np.isfinite(lat).any(axis=0)  # piece sizes with at least one profiled cell
    dense = usable.any() and np.array_equal(batches[usable], np.arange(1, usable.sum() + 1))
    if dense:
        return MergeSolver(lat[:, usable], threads, max_cores, max_batch)
    return LevelSolver(lat[:, usable], threads, batches[usable], max_cores, max_batch)


def optimize(table: LatencyTable, cores: int, batch: int) -> Plan:
    """The optimal plan for one (cores, batch); build a PlanTable to plan many batch sizes."""
    return PlanTable(table, cores, batch).plan(cores, batch)
