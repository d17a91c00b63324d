"""Planning: the optimizer's plans placed on a model's cores, the fat plan, pinned plans."""

from __future__ import annotations

import math

import pytest

from packrat.controller.planning import Planning
from packrat.errors import PlanError, TopologyError
from packrat.optimizer.table import LatencyTable
from packrat.topology import synthetic_topology
from packrat.types import InstanceSpec, Plan, parse_plan


def amdahl_table(max_threads: int, batches: list[int], serial: float = 0.2) -> LatencyTable:
    """L(t, b) = b * (serial + (1 - serial) / t) * 10 ms: thin instances win at big batches."""
    return LatencyTable.from_cells(
        {
            (t, b): 10.0 * b * (serial + (1 - serial) / t) + 1.0
            for t in range(1, max_threads + 1)
            for b in batches
        }
    )


def test_optimal_plans_are_placed_on_the_models_cores_and_kept() -> None:
    topology = synthetic_topology(sockets=1, cores_per_socket=4)
    planning = Planning(topology, amdahl_table(4, [1, 2, 4, 8]), max_batch_size=8)
    plan = planning.optimal(8)
    assert plan.batch == 8 and plan.cores_used <= 4
    used = [c for i in plan.instances for c in i.cores]
    assert sorted(used) == sorted(set(used)) and set(used) <= set(topology.cpu_ids())
    assert planning.optimal(8) is plan  # placed once
    one = planning.optimal(1)
    assert one.batch == 1 and len(one.instances) == 1
    assert planning.pool_size() == max(len(planning.optimal(b).instances) for b in range(1, 9))
    layouts = planning.layouts()  # one worker on each, for workers that cannot move
    assert set(layouts) == {layout for b in range(1, 9) for layout in planning.optimal(b).layout}
    assert len(layouts) == len(set(layouts)) >= planning.pool_size()


def test_fat_and_pinned_plans() -> None:
    topology = synthetic_topology(sockets=2, cores_per_socket=2)
    table = amdahl_table(4, [1, 2, 4])
    fat = Planning(topology, table, max_batch_size=4).fat()
    assert fat.instances == (InstanceSpec(4, 4, topology.cpu_ids()),)
    assert fat.latency_ms == table.get(4, 4)
    assert math.isnan(Planning(topology, None, max_batch_size=3).fat().latency_ms)
    pinned = Planning(topology, None, 4).place(parse_plan("<2,1,2>"))
    assert [len(i.cores) for i in pinned.instances] == [1, 1]
    already = Plan(1, 1, 5.0, (InstanceSpec(1, 1, (3,)),))
    assert Planning(topology, None, 4).place(already) is already
    with pytest.raises(TopologyError, match="needs 5 cores"):
        Planning(topology, None, 4).place(parse_plan("<5,1,1>"))


def test_without_a_profile_there_is_no_optimal_plan() -> None:
    planning = Planning(synthetic_topology(1, 2), None, max_batch_size=4)
    with pytest.raises(PlanError, match="no latency profile"):
        planning.optimal(4)
    assert planning.pool_size() == 1 and planning.layouts() == ()


def test_on_other_cores_plans_for_their_count() -> None:
    big = synthetic_topology(sockets=1, cores_per_socket=4)
    planning = Planning(big, amdahl_table(4, [1, 2, 4, 8]), max_batch_size=8)
    small = synthetic_topology(sockets=1, cores_per_socket=2)
    moved = planning.on(small)
    assert moved.cores == 2 and moved.table is planning.table
    assert moved.optimal(8).cores_used <= 2


def test_planning_scales_to_a_two_socket_128_core_server() -> None:
    topology = synthetic_topology(sockets=2, cores_per_socket=64)
    batches = [1, 2, 4, 8, 16, 32, 64, 128]
    planning = Planning(topology, amdahl_table(128, batches), max_batch_size=128)
    plan = planning.optimal(128)
    assert plan.batch == 128 and plan.cores_used <= 128
    cores = [c for i in plan.instances for c in i.cores]
    assert len(cores) == len(set(cores)) == plan.cores_used
    # Instances that fit in a socket stay in one socket.
    socket_of = {core.cpu: core.socket for core in topology.cores}
    assert all(len({socket_of[c] for c in i.cores}) == 1 for i in plan.instances if i.threads <= 64)
    assert 1 <= planning.pool_size() <= 128


def test_a_batch_no_plan_makes_up_exactly_runs_on_the_plan_for_the_next_size() -> None:
    topology = synthetic_topology(sockets=1, cores_per_socket=2)
    planning = Planning(topology, amdahl_table(2, [1, 2, 4, 8]), max_batch_size=8)
    # 7 = 4 + 2 + 1 needs three instances; two cores hold two.
    assert planning.optimal(7).layout == planning.optimal(8).layout
    assert planning.optimal(7).batch == 8
    one_core = Planning(synthetic_topology(1, 1), amdahl_table(1, [1, 2, 4]), max_batch_size=4)
    assert one_core.optimal(3).describe() == "<1,1,4>"
    assert one_core.pool_size() == 1
    gaps = Planning(synthetic_topology(1, 1), amdahl_table(1, [2]), max_batch_size=3)
    with pytest.raises(PlanError, match="no plan covers batch 3"):
        gaps.optimal(3)
