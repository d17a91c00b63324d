"""Measure a cell under contention: with the other cores running the same model, as in a plan.

An isolated cell L(t, b) is one instance alone on the machine. In a plan that instance shares
the machine with others: memory bandwidth, caches and the clock (turbo) are shared, so it runs
slower than alone (the paper's Appendix A: 12-15% on its Xeon). A contention cell Lc(t, b) is
measured the way the plan will run: `cores // t` instances of <t, b>, each pinned to its own
t cores, time their batches at the same time. Every instance's samples count for the cell:
they are all runs of <t, b> under the same contention.

The instances run in rounds of the same number of timed runs, so that they stay in step (an
instance that ran on alone would be timed without its neighbours); rounds go on until the
pooled samples meet the sampling policy. Cores left over by `cores % t` stay idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from packrat.stats import SamplingPolicy, should_stop
from packrat.types import InstanceSpec, Plan


class RunsAllInstances(Protocol):
    """What the measurement needs of an engine (`packrat.pool.engine.Engine`)."""

    def measure_all(self, policy: SamplingPolicy) -> list[list[float]]:
        """Every instance times its plan batch under `policy`, all at once; ms per instance."""
        ...


def neighbours(cores: int, threads: int) -> int:
    """How many instances of `threads` threads a contention cell runs on `cores` cores."""
    if not 1 <= threads <= cores:
        raise ValueError(f"threads must be in [1, {cores}], got {threads}")
    return cores // threads


def contended_plan(cores: int, threads: int, batch: int) -> Plan:
    """The (unallocated) plan a contention cell <threads, batch> is measured on: as many
    instances of it as `cores` holds."""
    count = neighbours(cores, threads)
    return Plan(
        cores=count * threads,
        batch=count * batch,
        latency_ms=0.0,
        instances=tuple(InstanceSpec(threads=threads, batch=batch) for _ in range(count)),
    )


def measure_contended(
    engine: RunsAllInstances,
    policy: SamplingPolicy,
    clock: Callable[[], float] = time.monotonic,
) -> list[float]:
    """Latencies (ms) of the engine's instances, all running at once, pooled.

    Each round every instance makes `policy.min_runs` timed runs (the first round after
    `policy.warmup_runs` untimed ones); rounds repeat until `should_stop` holds for the pooled
    samples and the time since the start.
    """
    rounds = replace(policy, max_runs=policy.min_runs)
    samples: list[float] = []
    started = clock()
    while True:
        for instance_samples in engine.measure_all(rounds):
            samples.extend(instance_samples)
        if should_stop(samples, clock() - started, policy):
            return samples
        rounds = replace(rounds, warmup_runs=0)
