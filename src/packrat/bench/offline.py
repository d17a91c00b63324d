"""`packrat bench`: measure Packrat's plan against the fat instance, T single-thread instances
and every other homogeneous plan, each as it really runs (its instances concurrently).

A configuration's latency is the end-to-end time of `Engine.infer` on a batch of B requests:
split, hand to the pinned workers, run concurrently, gather in order. Configurations with the
same thread layout share one set of worker processes (only the batch split changes), so a
model is loaded once per layout, not once per configuration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from packrat.bench.candidates import Candidate, candidates, role_labels
from packrat.models.base import ModelSource
from packrat.optimizer import PlanTable
from packrat.pool.config import EngineConfig
from packrat.profiler.profile_file import Profile
from packrat.progress import NullProgress, Progress
from packrat.stats import CellStats, SamplingPolicy, should_stop, summarize
from packrat.topology import Topology, allocate, check_cores
from packrat.types import InstanceSpec, Plan


@dataclass(frozen=True)
class BenchConfig:
    """Core budget, batch sizes, and how long to sample each configuration."""

    cores: int
    batches: tuple[int, ...]
    policy: SamplingPolicy = field(
        default_factory=lambda: SamplingPolicy(
            warmup_runs=1, min_runs=5, max_runs=40, rel_ci=0.02, max_time_s=20.0
        )
    )


@dataclass(frozen=True)
class Measurement:
    """One configuration at one batch size: measured end to end, and predicted by the profile."""

    model: str
    cores: int
    batch: int
    label: str  # packrat | fat | single | homogeneous
    roles: tuple[str, ...]  # every role the plan plays (Packrat's plan may also be the fat one)
    plan: str  # <instances,threads,batch> notation
    predicted_ms: float | None
    stats: CellStats


@dataclass(frozen=True)
class LayoutMemory:
    """Memory of one set of workers (a thread layout), read after its batches ran.

    pss_bytes counts each shared page once across the workers: the memory they use together.
    weights_bytes is the size of the weights mapped from the one shared file per worker.
    """

    layout: tuple[int, ...]
    pss_bytes: int
    rss_bytes: int
    weights_bytes: int

    @property
    def instances(self) -> int:
        return len(self.layout)


@dataclass(frozen=True)
class BenchResult:
    measurements: list[Measurement]
    memory: list[LayoutMemory]


def predicted_ms(plan: Plan, profile: Profile) -> float | None:
    """max_j L(t_j, b_j) from the profile, or None if a cell was not profiled."""
    lats = [profile.cells.get((i.threads, i.batch)) for i in plan.instances]
    if any(s is None for s in lats):
        return None
    return max(s.mean_ms for s in lats if s is not None)


def time_infer(engine: Any, requests: list[Any], policy: SamplingPolicy) -> CellStats:
    """End-to-end `engine.infer` latency in ms, sampled until `policy` says stop."""
    for _ in range(policy.warmup_runs):
        engine.infer(requests)
    samples: list[float] = []
    start = time.perf_counter()
    while not should_stop(samples, time.perf_counter() - start, policy):
        t0 = time.perf_counter()
        engine.infer(requests)
        samples.append((time.perf_counter() - t0) * 1e3)
    return summarize(samples)


def on_cores(plan: Plan, placed: Plan) -> Plan:
    """`plan` with the cores of `placed`, instance by instance (same layout)."""
    return Plan(
        cores=plan.cores,
        batch=plan.batch,
        latency_ms=plan.latency_ms,
        instances=tuple(
            InstanceSpec(i.threads, i.batch, p.cores)
            for i, p in zip(plan.instances, placed.instances, strict=True)
        ),
    )


def _by_layout(
    config: BenchConfig, table: PlanTable
) -> Iterator[tuple[tuple[int, ...], list[tuple[int, Candidate]]]]:
    groups: dict[tuple[int, ...], list[tuple[int, Candidate]]] = {}
    for batch in config.batches:
        for cand in candidates(config.cores, batch, table.plan(config.cores, batch)):
            groups.setdefault(cand.layout, []).append((batch, cand))
    yield from sorted(groups.items(), key=lambda kv: (len(kv[0]), kv[0]))


def run_bench(
    source: ModelSource,
    profile: Profile,
    config: BenchConfig,
    topology: Topology,
    progress: Progress | None = None,
    engine_config: EngineConfig | None = None,
) -> BenchResult:
    """Measure every configuration for every batch size; one worker set per thread layout."""
    from packrat.pool.engine import Engine

    check_cores(config.cores, topology)
    progress = progress or NullProgress()
    table = PlanTable(profile.latency_table(), config.cores, max(config.batches))
    groups = list(_by_layout(config, table))
    total_units = sum(b for _, g in groups for b, _ in g)
    results: list[Measurement] = []
    memory: list[LayoutMemory] = []
    requests: dict[int, list[Any]] = {}
    for layout, items in groups:
        first = allocate(items[0][1].plan, topology)
        with Engine(source, first, engine_config) as engine:
            if not memory:  # after the model loaded once: a bad model fails before any bar
                progress.start(total_units, f"bench {profile.model_name}")
            for batch, cand in sorted(items, key=lambda x: x[0]):
                if batch not in requests:
                    requests[batch] = engine.example_requests(batch)
                engine.replan(on_cores(cand.plan, first))
                stats = time_infer(engine, requests[batch], config.policy)
                roles = tuple(
                    dict.fromkeys([cand.label, *role_labels(config.cores, batch, cand.plan)])
                )
                results.append(
                    Measurement(
                        model=profile.model_name,
                        cores=config.cores,
                        batch=batch,
                        label=cand.label,
                        roles=roles,
                        plan=cand.plan.describe(),
                        predicted_ms=predicted_ms(cand.plan, profile),
                        stats=stats,
                    )
                )
                progress.advance(
                    batch,
                    f"bench {profile.model_name}: B={batch} {cand.plan.describe()} "
                    f"{stats.mean_ms:.1f} ms",
                )
            report = engine.memory()
            memory.append(
                LayoutMemory(
                    layout=layout,
                    pss_bytes=report.pss_bytes,
                    rss_bytes=report.rss_bytes,
                    weights_bytes=max(r.shared_bytes for r in engine.ready),
                )
            )
    results.sort(key=lambda m: (m.batch, m.label != "packrat", m.stats.mean_ms))
    return BenchResult(results, memory)
