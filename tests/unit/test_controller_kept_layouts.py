"""Plans within a budget of workers (`keep_layouts`, `Planning(max_layouts=...)`), on the paper's
16-core ResNet-50 profile and on synthetic 128-core servers."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from packrat.controller.kept_layouts import keep_layouts
from packrat.controller.planning import Planning
from packrat.controller.split_sizes import best_split
from packrat.errors import PlanError
from packrat.optimizer.table import LatencyTable
from packrat.profiler.profile_file import load_profile
from packrat.topology import synthetic_topology
from packrat.types import parse_plan

RESNET = Path(__file__).resolve().parents[1] / "fixtures" / "paper-profiles" / "cloudlab-c6420"
RESNET = RESNET / "resnet50_latency.csv"
TOPOLOGY = synthetic_topology(sockets=1, cores_per_socket=16)
MAX_BATCH = 64


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return load_profile(RESNET).latency_table().interpolated()


@pytest.fixture(scope="module")
def unlimited(table: LatencyTable) -> Planning:
    return Planning(TOPOLOGY, table, MAX_BATCH)


def test_the_optimal_plans_need_more_workers_than_a_budget_of_the_core_count(
    unlimited: Planning,
) -> None:
    # What the budget is for: one worker per layout of every optimal plan is many workers.
    assert len(unlimited.layouts()) > TOPOLOGY.num_cores


@pytest.mark.parametrize("most", [1, 2, 8, 16, 24])
def test_every_plan_runs_on_the_workers_kept_and_is_the_best_they_can_run(
    table: LatencyTable, unlimited: Planning, most: int
) -> None:
    planning = Planning(TOPOLOGY, table, MAX_BATCH, max_layouts=most)
    kept = set(planning.layouts())
    assert 1 <= len(kept) <= most
    groups = {plan.layout for plan in _optimal_plans(unlimited)} | {unlimited.fat().layout}
    runnable = [g for g in groups if set(g) <= kept]  # the candidate plans wholly kept
    assert runnable
    for b in range(1, MAX_BATCH + 1):
        plan = planning.optimal(b)
        assert plan.batch == b and set(plan.layout) <= kept
        optimal = unlimited.optimal(b).latency_ms
        assert plan.latency_ms >= optimal * (1 - 1e-9)  # never better than the optimum
        # The best any candidate plan wholly on the kept workers gives for this batch.
        planned = table.monotone_in_batch()
        best = min(best_split(planned, [t for t, _ in g], b)[1] for g in runnable)
        assert plan.latency_ms == pytest.approx(best, rel=1e-9)
        assert max(planned.get(i.threads, i.batch) or math.inf for i in plan.instances) == (
            pytest.approx(plan.latency_ms, rel=1e-9)
        )
    assert planning.pool_size() == max(len(planning.optimal(b).instances) for b in _all())


def test_one_worker_is_the_fat_instance(table: LatencyTable, unlimited: Planning) -> None:
    planning = Planning(TOPOLOGY, table, MAX_BATCH, max_layouts=1)
    assert planning.layouts() == unlimited.fat().layout
    assert all(planning.optimal(b).describe() == f"<1,16,{b}>" for b in _all())


def test_more_workers_lose_less_and_enough_lose_nothing(
    table: LatencyTable, unlimited: Planning
) -> None:
    optimal = [unlimited.optimal(b).latency_ms for b in _all()]

    def mean_slowdown(most: int) -> float:
        planning = Planning(TOPOLOGY, table, MAX_BATCH, max_layouts=most)
        kept = [planning.optimal(b).latency_ms for b in _all()]
        return sum(k / ms for k, ms in zip(kept, optimal, strict=True)) / MAX_BATCH

    slowdowns = [mean_slowdown(most) for most in (1, 4, 16, len(unlimited.layouts()))]
    assert slowdowns == sorted(slowdowns, reverse=True)
    assert slowdowns[0] > 1.05  # the fat instance alone is far from the optimum here
    assert slowdowns[-1] == pytest.approx(1.0)
    # With room for every layout, the plans are the optimal ones themselves.
    roomy = Planning(TOPOLOGY, table, MAX_BATCH, max_layouts=len(unlimited.layouts()))
    assert [roomy.optimal(b) for b in _all()] == _optimal_plans(unlimited)


def test_a_batch_the_profile_cannot_make_up_runs_on_the_plan_for_the_next_size() -> None:
    # Profiled at 1, 2, 4 and 8 only (not interpolated): on two cores, 7 needs 8's plan.
    cells = {(t, b): 10.0 * b / t + 1.0 for t in (1, 2) for b in (1, 2, 4, 8)}
    table = LatencyTable.from_cells(cells)
    planning = Planning(synthetic_topology(1, 2), table, 8, max_layouts=1)
    assert planning.optimal(7).batch == 8
    kept = keep_layouts([planning.fat()], table, 8, 1)
    assert [p.batch for p in kept.plans] == [1, 2, 4, 4, 8, 8, 8, 8]


def test_bad_budgets_are_refused(table: LatencyTable) -> None:
    with pytest.raises(PlanError, match="must be >= 1"):
        Planning(TOPOLOGY, table, MAX_BATCH, max_layouts=0)
    fat = Planning(TOPOLOGY, table, MAX_BATCH).fat()
    with pytest.raises(ValueError, match="no candidate plan fits in 1 workers"):
        keep_layouts([Planning(TOPOLOGY, table, 2).place(parse_plan("<2,8,1>"))], table, 2, 1)
    with pytest.raises(ValueError, match="max_layouts must be >= 1"):
        keep_layouts([fat], table, 2, 0)
    planning = Planning(TOPOLOGY, table, MAX_BATCH, max_layouts=4)
    with pytest.raises(PlanError, match="batch must be in 1..64"):
        planning.optimal(65)
    assert planning.on(synthetic_topology(1, 8)).max_layouts == 4


def test_a_two_socket_128_core_server_within_a_budget_of_its_cores() -> None:
    # Thin instances win at large batches, the fat one at batch 1: many layouts unlimited.
    topology = synthetic_topology(sockets=2, cores_per_socket=64)
    table = LatencyTable.from_cells(
        {
            (t, b): 10.0 * b * (0.1 + 0.9 / t) + 2.0 * t**0.5
            for t in range(1, 129)
            for b in (1, 2, 4, 8, 16, 32, 64, 128)
        }
    ).interpolated()
    unlimited = Planning(topology, table, 128)
    planning = Planning(topology, table, 128, max_layouts=128)
    assert len(unlimited.layouts()) > 128 >= len(planning.layouts())
    for b in (1, 7, 64, 100, 128):
        plan = planning.optimal(b)
        assert plan.batch == b and set(plan.layout) <= set(planning.layouts())
        assert plan.latency_ms >= unlimited.optimal(b).latency_ms * (1 - 1e-9)


def _all() -> range:
    return range(1, MAX_BATCH + 1)


def _optimal_plans(planning: Planning) -> list[object]:
    return [planning.optimal(b) for b in _all()]


def test_between_equally_fast_plans_the_running_workers_are_kept() -> None:
    # One thread is fastest at every batch: one instance on either core, equally fast.
    topology = synthetic_topology(1, 2)
    table = LatencyTable.from_cells(
        {(t, b): b / t**0.2 + 4.0 * (t - 1) for t in (1, 2) for b in (1, 2, 3, 4)}
    )
    planning = Planning(topology, table, 4)
    on_each = [planning.place(parse_plan("<1,1,4>")), planning.place(parse_plan("<1,1,4>"))]
    on_each[1] = dataclasses.replace(
        on_each[1], instances=(dataclasses.replace(on_each[1].instances[0], cores=(1,)),)
    )
    candidates = [*on_each, planning.fat()]
    assert keep_layouts(candidates, table, 4, 1).layouts == ((1, (0,)),)  # the first
    running = keep_layouts(candidates, table, 4, 1, held=[(1, (1,))])
    assert running.layouts == ((1, (1,)),)
    assert [p.layout for p in running.plans] == [((1, (1,)),)] * 4
