"""Plans within a budget of workers, for models whose workers cannot move.

A worker of such a model (OpenVINO's: `ModelSource.moves_in_place` is False) is compiled on its
cores and keeps them, so a server that switches among the optimal plans of every batch size
holds a worker, each with its own copy of the weights, on every (threads, cores) any of those
plans has (`Planning.layouts`): on 16 cores with the paper's ResNet-50 profile and batches up
to 64, 54 workers. `keep_layouts` keeps at most `max_layouts` workers and gives every batch size
the fastest plan they can run: the instances of one kept plan, with the batch split among
them (`best_split`: some may idle).

How (greedy, as for budgeted covering): the candidates are the placed plans given (the optimal
plans and the fat instance), by their layouts. The first kept is the candidate that fits the
budget and is fastest over every batch size (the sum of its predicted latency relative to the
best candidate's, batch size by batch size); then, while the budget allows, the candidate with
the largest gain per worker it adds (one that adds none is free). A candidate's latency at every
batch size is one `min_latencies`, computed once per set of thread counts.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from packrat.controller.split_sizes import best_split, min_latencies
from packrat.optimizer.table import LatencyTable
from packrat.types import InstanceSpec, Layout, Plan

LAYOUTS_PER_CORE = 2
"""The most layouts (workers that cannot move) a server keeps per core of a model unless told
(`packrat serve --max-workers`)."""

_UNCOVERED = 1e6
"""The relative cost of a batch size no kept plan covers: worse than any covered one."""


@dataclass(frozen=True)
class KeptLayouts:
    """The workers kept (`layouts`, one per (threads, cores)) and, for every batch size
    1..max_batch, the plan run on them (`plans[b - 1]`: for the next batch size the profile
    covers where it cannot cover b, as `Planning.optimal`)."""

    layouts: tuple[Layout, ...]
    plans: tuple[Plan, ...]

    def slowdown(self, fastest: Sequence[float]) -> list[float]:
        """Each batch size's predicted latency relative to `fastest[b - 1]` (the optimal
        plan's): 1.0 where the kept workers run the optimal plan."""
        return [plan.latency_ms / ms for plan, ms in zip(self.plans, fastest, strict=True)]


def keep_layouts(
    candidates: Sequence[Plan],
    table: LatencyTable,
    max_batch: int,
    max_layouts: int,
    held: Collection[Layout] = (),
) -> KeptLayouts:
    """At most `max_layouts` workers, chosen among the layouts of `candidates` (placed plans
    on one model's cores; include the fat instance so that one worker always suffices), and
    the plan for every batch size up to `max_batch` on them. Latencies are those the optimizer
    plans on (`LatencyTable.monotone_in_batch`). Between candidates equally fast, those
    whose workers are all in `held` (running already) are kept first.

    Raises ValueError for max_layouts < 1, or if no candidate fits in it."""
    if max_layouts < 1:
        raise ValueError(f"max_layouts must be >= 1, got {max_layouts}")
    groups = list(dict.fromkeys(plan.layout for plan in candidates))
    fitting = [g for g in groups if len(set(g)) <= max_layouts]
    if not fitting:
        raise ValueError(f"no candidate plan fits in {max_layouts} workers")
    planned = table.monotone_in_batch()
    cost = _latency(fitting, planned, max_batch)
    covering = _next_covered(cost)
    fastest = np.min(covering, axis=0)
    fastest[~np.isfinite(fastest)] = 1.0
    relative = np.where(np.isfinite(covering), covering / fastest, _UNCOVERED)
    kept = _greedy(fitting, relative, max_layouts, frozenset(held))
    cores = candidates[0].cores
    plans = []
    for b in range(1, max_batch + 1):
        i = min(kept, key=lambda k: (relative[k, b - 1], len(fitting[k])))
        size = next((n for n in range(b, max_batch + 1) if np.isfinite(cost[i, n - 1])), b)
        plans.append(_plan_on(fitting[i], planned, cores, size, float(cost[i, size - 1])))
    layouts = tuple(dict.fromkeys(layout for i in kept for layout in fitting[i]))
    return KeptLayouts(layouts, tuple(plans))


def _greedy(
    groups: Sequence[tuple[Layout, ...]],
    relative: npt.NDArray[np.float64],
    max_layouts: int,
    running: frozenset[Layout],
) -> list[int]:
    """Indices of the groups kept: the best alone, then the largest gain per added worker;
    on a tie, a group of `running` workers first."""
    totals = relative.sum(axis=1)
    kept = [min(range(len(groups)), key=lambda i: (totals[i], not running.issuperset(groups[i])))]
    held = set(groups[kept[0]])
    current = relative[kept[0]].copy()
    while True:
        gains = np.maximum(current - relative, 0.0).sum(axis=1)
        best, best_key = -1, (0.0, False)
        for i, group in enumerate(groups):
            added = len(set(group) - held)
            if gains[i] <= 1e-9 or len(held) + added > max_layouts:
                continue
            key = (gains[i] / added if added else math.inf, running.issuperset(group))
            if key > best_key:
                best, best_key = i, key
        if best < 0:
            return kept
        kept.append(best)
        held |= set(groups[best])
        current = np.minimum(current, relative[best])


def _latency(
    groups: Sequence[tuple[Layout, ...]], table: LatencyTable, max_batch: int
) -> npt.NDArray[np.float64]:
    """cost[g, b - 1]: the latency of group g's instances on a batch of b (inf if the
    profile's cells cannot make up b), computed once per set of thread counts."""
    by_threads: dict[tuple[int, ...], list[float]] = {}
    rows = []
    for group in groups:
        threads = tuple(sorted(t for t, _ in group))
        if threads not in by_threads:
            by_threads[threads] = min_latencies(table, threads, max_batch)[1:]
        rows.append(by_threads[threads])
    return np.array(rows, dtype=np.float64)


def _next_covered(cost: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each batch size's cost, or where it is not covered the next covered size's (as
    `Planning.optimal` runs a batch it cannot cover on the plan for the next size)."""
    covering = cost.copy()
    for b in range(cost.shape[1] - 2, -1, -1):
        uncovered = ~np.isfinite(covering[:, b])
        covering[uncovered, b] = covering[uncovered, b + 1]
    return covering


def _plan_on(
    group: tuple[Layout, ...], table: LatencyTable, cores: int, batch: int, latency_ms: float
) -> Plan:
    """`batch` split over the instances of `group` within `latency_ms` (their best), with the
    fewest busy instances; idle ones are left out."""
    threads = [t for t, _ in group]
    sizes = _fill(table, threads, batch, latency_ms)
    if sizes is None:  # batch sizes not dense: the exact split (a small table)
        sizes, latency_ms = best_split(table, threads, batch)
    instances = [
        InstanceSpec(threads=t, batch=n, cores=placed)
        for (t, placed), n in zip(group, sizes, strict=True)
        if n > 0
    ]
    instances.sort(key=lambda s: (-s.threads, -s.batch))
    return Plan(cores=cores, batch=batch, latency_ms=latency_ms, instances=tuple(instances))


def _fill(
    table: LatencyTable, threads: Sequence[int], batch: int, latency_ms: float
) -> list[int] | None:
    """On a table with every batch size 1..n and rows non-decreasing (an interpolated profile,
    made monotone), each instance can take any count up to its cap (the most requests it
    serves within `latency_ms`): filling the largest caps first gives the fewest busy
    instances, in O(instances). None on another table, or if the caps cannot cover `batch`."""
    if table.batches != tuple(range(1, len(table.batches) + 1)) or not math.isfinite(latency_ms):
        return None
    bound = latency_ms * (1 + 1e-9)
    caps = []
    for t in threads:
        row = table.latency_ms[table.threads.index(t)] if t in table.threads else np.array([])
        caps.append(int(np.searchsorted(np.nan_to_num(row, nan=math.inf), bound, "right")))
    sizes, left = [0] * len(threads), batch
    for j in sorted(range(len(threads)), key=lambda j: -caps[j]):
        sizes[j] = min(caps[j], left)
        left -= sizes[j]
    return sizes if left == 0 else None
