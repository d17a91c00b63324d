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

Which kind a first start makes (`ProfileKindSetting`): by default, contention where the model
has 2 to `AUTO_CONTENTION_CORES` cores, isolated on more (and on one core, where a cell has no
neighbours and both kinds measure alike).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from packrat.choices import parse_choice
from packrat.stats import SamplingPolicy, should_stop
from packrat.types import InstanceSpec, Plan

AUTO_CONTENTION_CORES = 4
"""The most cores on which `auto` profiles with contention. Measured on 2 cores (docs/benchmarks/
backends-gpt2-contention.md, backends-resnet50-contention.md): plans of instances side by
side ran 1.09-1.45x slower than isolated profiles predicted, which made some batch sizes
slower than one process beyond the CI; on contention profiles none was. A contention profile
loads the model once per instance of each row t, T // t times, where an isolated one loads
it once: over all rows 1.5x as often on 2 cores, 2x on 4, 3.1x on 16, 5x on 128. Above 4
cores, `auto` stays isolated until a many-core machine has been measured."""


class ProfileKindSetting(enum.StrEnum):
    """Which kind of profile (`ProfileKind`) `packrat serve` and `packrat profile` make: AUTO
    picks by the model's cores (`contention_on`), the others name the kind."""

    AUTO = "auto"
    ISOLATED = "isolated"
    CONTENTION = "contention"

    @classmethod
    def parse(cls, text: str) -> ProfileKindSetting:
        """The setting named `text`; ValueError listing the choices."""
        return parse_choice(cls, text, "profile kind")

    def contention_on(self, cores: int) -> bool:
        """Whether a model on `cores` physical cores is profiled with contention."""
        if self is ProfileKindSetting.AUTO:
            return 2 <= cores <= AUTO_CONTENTION_CORES
        return self is ProfileKindSetting.CONTENTION


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
