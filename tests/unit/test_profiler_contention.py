"""Contention cells: the plan they run on, and rounds of timed runs pooled until tight."""

from __future__ import annotations

import itertools

import pytest

from packrat.profiler.contention import (
    AUTO_CONTENTION_CORES,
    ProfileKindSetting,
    contended_plan,
    measure_contended,
    neighbours,
)
from packrat.stats import SamplingPolicy


class FakeEngine:
    """Instances whose every run takes the next latency of a cycle; records each round."""

    def __init__(self, instances: int, latencies_ms: list[float]) -> None:
        self.instances = instances
        self.rounds: list[SamplingPolicy] = []
        self._next = itertools.cycle(latencies_ms)

    def measure_all(self, policy: SamplingPolicy) -> list[list[float]]:
        self.rounds.append(policy)
        return [[next(self._next) for _ in range(policy.max_runs)] for _ in range(self.instances)]


def test_a_cell_runs_as_many_copies_as_the_cores_hold() -> None:
    plan = contended_plan(cores=16, threads=3, batch=4)
    assert [(i.threads, i.batch) for i in plan.instances] == [(3, 4)] * 5  # 1 core idle
    assert (plan.cores, plan.batch) == (15, 20)
    assert neighbours(16, 16) == 1 and neighbours(2, 1) == 2
    with pytest.raises(ValueError, match="threads"):
        neighbours(4, 5)


def test_steady_instances_stop_after_one_round_with_every_sample_pooled() -> None:
    engine = FakeEngine(instances=4, latencies_ms=[100.0])
    policy = SamplingPolicy(warmup_runs=2, min_runs=5, max_runs=200, rel_ci=0.03)
    samples = measure_contended(engine, policy)
    assert samples == [100.0] * 20  # 4 instances x 5 runs
    # one round: each instance made exactly min_runs timed runs after the warm-up
    assert [(r.warmup_runs, r.min_runs, r.max_runs) for r in engine.rounds] == [(2, 5, 5)]


def test_noisy_instances_run_more_rounds_without_warming_up_again() -> None:
    engine = FakeEngine(instances=2, latencies_ms=[50.0, 150.0, 100.0])
    policy = SamplingPolicy(warmup_runs=1, min_runs=3, max_runs=30, rel_ci=0.05)
    samples = measure_contended(engine, policy)
    # far too noisy for +-5%: rounds of 2 x 3 runs go on until the pooled cap of 30 runs
    assert len(engine.rounds) == 5 and len(samples) == 30
    assert [r.warmup_runs for r in engine.rounds] == [1, 0, 0, 0, 0]


def test_the_time_cap_ends_the_rounds() -> None:
    engine = FakeEngine(instances=2, latencies_ms=[10.0, 90.0])
    clock = itertools.count(0.0, 4.0)  # each reading 4 s later than the last
    policy = SamplingPolicy(warmup_runs=0, min_runs=2, max_runs=1000, rel_ci=0.01, max_time_s=10)
    measure_contended(engine, policy, clock=lambda: float(next(clock)))
    assert len(engine.rounds) == 3  # 4 s, 8 s, then 12 s >= 10 s


def test_auto_profiles_with_contention_on_few_cores_only() -> None:
    auto = ProfileKindSetting.AUTO
    kinds = {cores: auto.contention_on(cores) for cores in (1, 2, AUTO_CONTENTION_CORES, 5, 128)}
    assert kinds == {
        1: False,  # no neighbour to contend with: one cache entry for both
        2: True,
        AUTO_CONTENTION_CORES: True,
        5: False,
        128: False,
    }
    assert ProfileKindSetting.ISOLATED.contention_on(2) is False
    assert ProfileKindSetting.CONTENTION.contention_on(128) is True
    assert ProfileKindSetting.parse("auto") is auto
    with pytest.raises(ValueError, match="'mixed': choose one of auto, isolated, contention"):
        ProfileKindSetting.parse("mixed")
