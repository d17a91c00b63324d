"""How long a simulated batch takes on a plan: the server's split, the profile's latencies.

A batch of n on a plan's instances is split as the server splits it (the same `MemoizedSplit`
over the same latency table, `packrat.controller.split_sizes`), and takes the slowest busy
instance's profiled latency L(t_j, n_j), each optionally scaled by its own lognormal noise
(instances are independent, so the slowest of many noisy instances is slower than one: the
stragglers that make wide plans pay), plus a fixed per-batch overhead (HTTP, pipes to the
workers, the split). A split the profile cannot cover (the server then splits by thread share
and predicts inf) is timed by interpolating each instance's row of the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from packrat.controller.split_sizes import MemoizedSplit
from packrat.errors import PackratError
from packrat.optimizer.table import LatencyTable
from packrat.types import Plan

DEFAULT_OVERHEAD_MS = 1.0
"""Per-batch time outside the model, ms: the serving overhead measured at batch 1 here
(0.8 ms p50, docs/serve-overhead.md), rounded up."""

DEFAULT_SWITCH_MS = 1.0
"""Time of an in-place switch of plans, ms (docs/reconfigure.md: median 0.75 to 3 ms)."""


class SimError(PackratError):
    """A simulation that cannot run as asked (a plan the profile cannot time, bad settings)."""


@dataclass(frozen=True)
class Timing:
    """What a batch costs besides the model itself, and how noisy the model is.

    overhead_ms: fixed time added to every batch, ms (>= 0).
    switch_ms: time of a switch of plans, added before the batch that asked for it (>= 0).
    noise_cv: coefficient of variation of each instance's lognormal latency noise (mean 1);
        0 runs every cell at exactly its profiled latency.
    """

    overhead_ms: float = DEFAULT_OVERHEAD_MS
    switch_ms: float = DEFAULT_SWITCH_MS
    noise_cv: float = 0.0

    def __post_init__(self) -> None:
        for name in ("overhead_ms", "switch_ms", "noise_cv"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (math.isfinite(value) and value >= 0):
                raise SimError(f"Timing.{name} must be a finite number >= 0, got {value!r}")


class ServiceModel:
    """Batch times from `table` (the table the server splits with), noise drawn from `seed`."""

    def __init__(self, table: LatencyTable, timing: Timing, seed: int = 0) -> None:
        self._table = table
        self._timing = timing
        self._splits = MemoizedSplit(table)
        self._cells: dict[tuple[tuple[int, ...], int], list[float]] = {}
        self._rng = np.random.default_rng([seed, 1])  # a stream apart from the arrivals'
        sigma2 = math.log1p(timing.noise_cv**2)
        self._sigma = math.sqrt(sigma2)
        self._mu = -sigma2 / 2  # mean 1

    @property
    def table(self) -> LatencyTable:
        return self._table

    def split(self, plan: Plan, batch: int) -> tuple[list[int], float]:
        """Requests per instance and the predicted latency in ms, as the server's
        `ModelRuntime.split` gives them (inf where the profile cannot cover the split)."""
        return self._splits.split([instance.threads for instance in plan.instances], batch)

    def batch_s(self, plan: Plan, batch: int) -> float:
        """Seconds from the batch's start on `plan` to its answers (without any switch)."""
        overhead_ms = self._timing.overhead_ms
        if self._sigma == 0.0:
            cells = self._instance_ms(plan, batch)
            return (max(cells, default=0.0) + overhead_ms) / 1000.0
        cells = self._instance_ms(plan, batch)
        noise = self._rng.lognormal(self._mu, self._sigma, size=len(cells))
        slowest = float(np.max(np.asarray(cells) * noise)) if cells else 0.0
        return (slowest + overhead_ms) / 1000.0

    def _instance_ms(self, plan: Plan, batch: int) -> list[float]:
        """L(t_j, n_j) of each busy instance of the server's split, ms."""
        threads = tuple(instance.threads for instance in plan.instances)
        key = (threads, batch)
        cells = self._cells.get(key)
        if cells is None:
            sizes, _ = self.split(plan, batch)
            cells = [self._latency_ms(t, n) for t, n in zip(threads, sizes, strict=True) if n]
            self._cells[key] = cells
        return cells

    def _latency_ms(self, threads: int, batch: int) -> float:
        ms = self._table.get(threads, batch)
        if ms is not None:
            return ms
        if threads not in self._table.threads:
            raise SimError(
                f"the profile has no latency for {threads} threads (it has "
                f"{list(self._table.threads)}): cannot time a plan that uses them"
            )
        row = self._table.latency_ms[self._table.threads.index(threads)]
        known = np.isfinite(row)
        batches = np.asarray(self._table.batches, dtype=np.float64)[known]
        values = row[known]
        if batch > batches[-1]:  # beyond the largest profiled batch: linear in the batch
            return float(values[-1] * batch / batches[-1])
        return float(np.interp(batch, batches, values))
