"""Time a few cells of several sources (a model's conversions to each backend, say) side by
side: the backend probes' timing (`profiler.backend_select`).

Timing one source after the other charges the machine's drift to whichever comes last: on a
virtual machine whose speed moves 10-30% within minutes, that alone can rank one backend
1.3x behind another that runs as fast. Here each thread count's instances of every source are
started together, and the sources are timed in passes whose order is reversed each time
(A B C, then C B A): a slowdown that grows or fades over the passes weighs on every source
alike, and a cell's latency is the median of its passes (`stats.merge_passes`). The passes
share one sampling budget (`SamplingPolicy.per_pass`: one timed run a pass may do), so they
cost about what one pass of the whole budget would, plus the warm-up: every pass warms up a
short cell (its worker sat idle while the others ran), but a cell whose run outlasts a pass's
time budget is warmed up in the first pass only (`warm_up_again`). Such a run is seconds long,
the idle worker's cold caches cost it milliseconds, and a warm-up would double the pass (with
a warm-up and two timed runs in every pass, bert-base's probes at batch 63 took about twice
as long as timing the candidates one after the other had).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from packrat.errors import PackratError
from packrat.models.base import ModelSource
from packrat.pool.config import EngineConfig
from packrat.profiler.sweep import CellWorkers, SweepConfig
from packrat.stats import CellStats, SamplingPolicy, merge_passes, summarize
from packrat.topology import Topology, check_cores, read_topology

K = TypeVar("K", bound=Hashable)

Cell = tuple[int, int]
"""(threads, batch)"""

PASSES = 2
"""Passes over the sources: one in order and one reversed cancel a steady drift."""


@dataclass(frozen=True)
class SideBySide(Generic[K]):
    """What `measure_side_by_side` found: each source's cells, or why it could not run."""

    stats: dict[K, dict[Cell, CellStats]] = field(default_factory=dict)
    failed: dict[K, PackratError] = field(default_factory=dict)


def measure_side_by_side(
    sources: Mapping[K, ModelSource],
    cells: Sequence[Cell],
    policy: SamplingPolicy,
    *,
    passes: int = PASSES,
    topology: Topology | None = None,
    engine_config: EngineConfig | None = None,
    timed: Callable[[K, float], None] | None = None,
) -> SideBySide[K]:
    """Measure `cells` of each source on one isolated instance per cell, thread count by
    thread count: the instances of every source for that thread count are started (on the
    same cores; all but the one timing stay idle), then timed in `passes` passes over the
    sources, in order and reversed by turns, each sampling every cell of the thread count by
    `policy.per_pass(passes)` (a later pass skips the warm-up of a long cell:
    `warm_up_again`). `timed(key, share)` is called after each pass of a source,
    with the share of that source's timing it was (for progress: the shares of a source that
    runs to the end add up to 1).

    A source whose workers fail to start or to run is left out from then on, with its error
    in `failed`; the others go on. Every source's instance of one thread count is loaded at
    once: memory for as many copies of the model as there are sources.
    """
    found: SideBySide[K] = SideBySide()
    if not cells or not sources:
        return found
    topology = topology or read_topology()
    engine_config = engine_config or EngineConfig()
    per_pass = policy.per_pass(passes)
    config = SweepConfig(max(t for t, _ in cells), tuple(b for _, b in cells), per_pass)
    check_cores(config.cores, topology)
    runs: dict[K, dict[Cell, list[CellStats]]] = {key: {} for key in sources}
    thread_counts = sorted({t for t, _ in cells})
    share = 1 / (passes * len(thread_counts))
    for threads in thread_counts:
        batches = sorted({b for t, b in cells if t == threads})
        workers: dict[K, CellWorkers] = {}
        try:
            for key, source in sources.items():
                if key in found.failed:
                    continue
                workers[key] = CellWorkers(source, config, topology, engine_config)
                try:
                    workers[key].ready(threads)
                except PackratError as exc:
                    found.failed[key] = exc
                    workers.pop(key).close()
            order = list(workers)
            for done in range(passes):
                for key in order if done % 2 == 0 else reversed(order):
                    if key in found.failed:
                        continue
                    try:
                        for batch in batches:
                            earlier = runs[key].setdefault((threads, batch), [])
                            cold = bool(earlier) and not warm_up_again(earlier[0], per_pass)
                            samples, _ = workers[key].measure(
                                batch, replace(per_pass, warmup_runs=0) if cold else per_pass
                            )
                            earlier.append(summarize(samples))
                    except PackratError as exc:
                        found.failed[key] = exc
                        workers.pop(key).close()
                    if timed is not None:
                        timed(key, share)
        finally:
            for each in workers.values():
                each.close()
    for key, measured in runs.items():
        if key not in found.failed:
            found.stats[key] = {cell: merge_passes(stats) for cell, stats in measured.items()}
    return found


def warm_up_again(first: CellStats, policy: SamplingPolicy) -> bool:
    """Whether a later pass over a cell warms it up again, its first pass `first`: when one
    of its runs fits in the pass's time budget (`policy.max_time_s`). A longer run is timed
    alone: a warm-up would double what the pass costs, for a cold start of milliseconds."""
    return first.mean_ms < policy.max_time_s * 1000.0
