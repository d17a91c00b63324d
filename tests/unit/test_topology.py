"""Tests for packrat.topology: sysfs parsing on fake trees, allocation rules, machine info."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packrat.errors import TopologyError
from packrat.topology import (
    MachineInfo,
    PhysicalCore,
    Topology,
    allocate,
    available_cores,
    check_cores,
    format_cpu_list,
    machine_info,
    parse_cpu_list,
    read_topology,
    synthetic_topology,
)
from packrat.types import InstanceSpec, Plan

# --------------------------------------------------------------------------------------------
# Fake sysfs trees
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeCpu:
    """One CPU of a fake sysfs tree; None leaves the corresponding file out."""

    package: int | None
    core_id: int | None
    siblings: str | None
    node: int | None


def write_sysfs(
    root: Path,
    cpus: dict[int, FakeCpu],
    *,
    node_links: bool = True,
    node_lists: bool = True,
    online: str | None = None,
) -> Path:
    """Write `root/cpu/cpuN/...` and `root/node/nodeK/cpulist`; return the cpu directory."""
    cpu_root = root / "cpu"
    node_root = root / "node"
    cpu_root.mkdir(parents=True)
    nodes: dict[int, list[int]] = {}
    for cpu, info in cpus.items():
        topo = cpu_root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        if info.package is not None:
            (topo / "physical_package_id").write_text(f"{info.package}\n")
        if info.core_id is not None:
            (topo / "core_id").write_text(f"{info.core_id}\n")
        if info.siblings is not None:
            (topo / "thread_siblings_list").write_text(f"{info.siblings}\n")
            (topo / "core_cpus_list").write_text(f"{info.siblings}\n")
        if info.node is not None:
            nodes.setdefault(info.node, []).append(cpu)
            if node_links:
                (node_root / f"node{info.node}").mkdir(parents=True, exist_ok=True)
                os.symlink(
                    f"../../node/node{info.node}", cpu_root / f"cpu{cpu}" / f"node{info.node}"
                )
    if node_lists:
        for node, members in nodes.items():
            (node_root / f"node{node}").mkdir(parents=True, exist_ok=True)
            (node_root / f"node{node}" / "cpulist").write_text(format_cpu_list(members) + "\n")
    if online is not None:
        (cpu_root / "online").write_text(online + "\n")
    return cpu_root


def two_cpu_vm() -> dict[int, FakeCpu]:
    return {c: FakeCpu(package=0, core_id=c, siblings=str(c), node=0) for c in range(2)}


def dual_socket_smt(
    *, siblings: bool = True, core_ids: bool = True, packages: bool = True, nodes: bool = True
) -> dict[int, FakeCpu]:
    """2 sockets x 32 cores x 2 threads: CPU c and c + 64 are siblings; node = socket."""
    cpus = {}
    for cpu in range(128):
        first = cpu % 64
        socket = first // 32
        cpus[cpu] = FakeCpu(
            package=socket if packages else None,
            core_id=first % 32 if core_ids else None,
            siblings=f"{first},{first + 64}" if siblings else None,
            node=socket if nodes else None,
        )
    return cpus


ALL_128 = set(range(128))


@pytest.fixture(scope="module")
def smt_sysfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full 2 x 32 x 2 tree, written once: it is slow to create and tests only read it."""
    return write_sysfs(tmp_path_factory.mktemp("smt"), dual_socket_smt())


# --------------------------------------------------------------------------------------------
# read_topology
# --------------------------------------------------------------------------------------------


def test_two_cpu_vm_without_smt(tmp_path: Path) -> None:
    topo = read_topology(write_sysfs(tmp_path, two_cpu_vm()), allowed={0, 1})
    assert topo.num_cores == 2
    assert topo.num_sockets == 1
    assert topo.num_nodes == 1
    assert not topo.smt
    assert topo.cpu_ids() == (0, 1)
    assert topo.cores == (
        PhysicalCore(socket=0, node=0, core_id=0, cpus=(0,)),
        PhysicalCore(socket=0, node=0, core_id=1, cpus=(1,)),
    )


def test_dual_socket_smt_uses_first_sibling(smt_sysfs: Path) -> None:
    topo = read_topology(smt_sysfs, allowed=ALL_128)
    assert topo.num_cores == 64
    assert topo.num_sockets == 2
    assert topo.num_nodes == 2
    assert topo.smt
    assert topo.cpu_ids() == tuple(range(64))
    assert all(core.cpus == (core.cpu, core.cpu + 64) for core in topo.cores)
    assert [c.socket for c in topo.cores] == [0] * 32 + [1] * 32
    assert [c.core_id for c in topo.cores] == list(range(32)) * 2


def test_nodes_from_cpu_node_links_alone(tmp_path: Path) -> None:
    # Sub-NUMA clustering: two nodes per socket, known only through cpuN/nodeK links.
    cpus = {c: FakeCpu(c // 8, c % 8, str(c), 2 * (c // 8) + (c % 8) // 4 + 10) for c in range(16)}
    topo = read_topology(write_sysfs(tmp_path, cpus, node_lists=False), allowed=set(range(16)))
    assert [c.node for c in topo.cores] == [10] * 4 + [11] * 4 + [12] * 4 + [13] * 4
    assert (topo.num_sockets, topo.num_nodes) == (2, 4)


def test_nodes_from_node_cpulist_when_cpu_links_are_missing(tmp_path: Path) -> None:
    cpus = {c: FakeCpu(0, c % 8, f"{c % 8},{c % 8 + 8}", (c % 8) // 4) for c in range(16)}
    cpu_root = write_sysfs(tmp_path, cpus, node_links=False)
    topo = read_topology(cpu_root, allowed=set(range(16)))
    assert [c.node for c in topo.cores] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert topo.num_sockets == 1
    assert topo.num_nodes == 2


def test_explicit_node_root(tmp_path: Path) -> None:
    cpu_root = write_sysfs(tmp_path / "sys", two_cpu_vm(), node_links=False, node_lists=False)
    other = tmp_path / "elsewhere"
    (other / "node3").mkdir(parents=True)
    (other / "node3" / "cpulist").write_text("0-1\n")
    topo = read_topology(cpu_root, allowed={0, 1}, node_root=other)
    assert {c.node for c in topo.cores} == {3}


def test_allowed_subset_like_taskset(smt_sysfs: Path) -> None:
    topo = read_topology(smt_sysfs, allowed=set(range(32, 48)) | set(range(96, 112)))
    assert topo.num_cores == 16
    assert topo.num_sockets == 1
    assert {c.socket for c in topo.cores} == {1}
    assert topo.cpu_ids() == tuple(range(32, 48))
    assert topo.smt


def test_only_second_sibling_allowed(smt_sysfs: Path) -> None:
    # Core 0 only through its second thread 64, core 1 through both, core 2 through its first.
    topo = read_topology(smt_sysfs, allowed={64, 1, 65, 2})
    assert topo.num_cores == 3
    assert [c.cpus for c in topo.cores] == [(64,), (1, 65), (2,)]
    assert topo.cpu_ids() == (64, 1, 2)
    assert [c.siblings for c in topo.cores] == [(0, 64), (1, 65), (2, 66)]
    assert topo.smt  # the machine has SMT even though core 0 shows only one thread


def test_both_siblings_allowed_counts_one_core(smt_sysfs: Path) -> None:
    topo = read_topology(smt_sysfs, allowed={0, 64})
    assert topo.num_cores == 1
    assert topo.cpu_ids() == (0,)


def test_missing_node_info_uses_socket(tmp_path: Path) -> None:
    cpus = dual_socket_smt(nodes=False)
    topo = read_topology(write_sysfs(tmp_path, cpus), allowed=ALL_128)
    assert topo.num_nodes == 2
    assert all(c.node == c.socket for c in topo.cores)


def test_missing_package_means_socket_zero(tmp_path: Path) -> None:
    cpus = {c: FakeCpu(None, c, str(c), None) for c in range(4)}
    topo = read_topology(write_sysfs(tmp_path, cpus), allowed=set(range(4)))
    assert topo.num_cores == 4
    assert {(c.socket, c.node) for c in topo.cores} == {(0, 0)}


def test_core_id_repeats_across_sockets_without_sibling_lists(tmp_path: Path) -> None:
    cpus = dual_socket_smt(siblings=False)
    topo = read_topology(write_sysfs(tmp_path, cpus), allowed=ALL_128)
    assert topo.num_cores == 64  # (socket, core_id) pairs, not 32 core ids
    assert topo.cpu_ids() == tuple(range(64))
    assert topo.smt


def test_siblings_without_core_id_still_group_threads(tmp_path: Path) -> None:
    topo = read_topology(write_sysfs(tmp_path, dual_socket_smt(core_ids=False)), allowed=ALL_128)
    assert topo.num_cores == 64
    assert all(c.cpus == (c.cpu, c.cpu + 64) for c in topo.cores)


def test_no_core_id_and_no_siblings_means_each_cpu_is_a_core(tmp_path: Path) -> None:
    cpus = dual_socket_smt(core_ids=False, siblings=False)
    topo = read_topology(write_sysfs(tmp_path, cpus), allowed=ALL_128)
    assert topo.num_cores == 128
    assert not topo.smt


def test_offline_cpus_are_skipped(tmp_path: Path) -> None:
    cpu_root = write_sysfs(tmp_path, dual_socket_smt(), online="0-63,65-127")
    (cpu_root / "cpu1" / "online").write_text("0\n")
    topo = read_topology(cpu_root, allowed=ALL_128)
    assert topo.num_cores == 64
    assert topo.cores[0].cpus == (0,) and topo.cores[0].siblings == (0,)
    assert topo.cores[1].cpus == (65,)


def test_missing_sysfs_falls_back_to_allowed_cpus(tmp_path: Path) -> None:
    topo = read_topology(tmp_path / "absent", allowed={3, 1, 2})
    assert topo.cpu_ids() == (1, 2, 3)
    assert topo.num_sockets == 1 and not topo.smt


def test_no_allowed_cpu_online_raises(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="none of the CPUs"):
        read_topology(write_sysfs(tmp_path, two_cpu_vm()), allowed={7})


def test_real_machine() -> None:
    topo = read_topology()
    assert topo.num_cores >= 1
    assert set(topo.cpu_ids()) <= os.sched_getaffinity(0)
    if not topo.smt:
        assert topo.num_cores == len(os.sched_getaffinity(0))
    assert available_cores() <= topo.num_cores


# --------------------------------------------------------------------------------------------
# Values, synthetic topologies, CPU lists
# --------------------------------------------------------------------------------------------


def test_synthetic_numbering_is_linux_style() -> None:
    topo = synthetic_topology(sockets=2, cores_per_socket=4, threads_per_core=2, nodes_per_socket=2)
    assert topo.cpu_ids() == tuple(range(8))
    assert topo.cores[0].cpus == (0, 8)
    assert topo.cores[4] == PhysicalCore(socket=1, node=2, core_id=0, cpus=(4, 12))
    assert [c.node for c in topo.cores] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (topo.num_sockets, topo.num_nodes, topo.smt) == (2, 4, True)
    assert not synthetic_topology(1, 4).smt


@pytest.mark.parametrize("args", [(0, 4), (1, 0), (1, 4, 0), (1, 4, 1, 3)])
def test_synthetic_rejects_bad_counts(args: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        synthetic_topology(*args)


def test_topology_rejects_shared_cpus_and_empty() -> None:
    with pytest.raises(ValueError):
        Topology(())
    with pytest.raises(ValueError):
        Topology((PhysicalCore(0, 0, 0, (0, 4)), PhysicalCore(0, 0, 1, (4,))))
    with pytest.raises(ValueError):
        PhysicalCore(0, 0, 0, ())
    with pytest.raises(ValueError):
        PhysicalCore(0, 0, 0, (3, 1))


def test_cpu_list_round_trip() -> None:
    assert parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_cpu_list("0-7:2") == {0, 2, 4, 6}
    assert parse_cpu_list("") == set()
    assert format_cpu_list([5, 0, 1, 2, 10, 11]) == "0-2,5,10-11"
    with pytest.raises(ValueError):
        parse_cpu_list("3-1")


# --------------------------------------------------------------------------------------------
# allocate
# --------------------------------------------------------------------------------------------


def make_plan(threads: Sequence[int], cores: int | None = None) -> Plan:
    instances = tuple(InstanceSpec(threads=t, batch=1) for t in threads)
    budget = cores if cores is not None else max(sum(threads), 1)
    return Plan(cores=budget, batch=len(threads), latency_ms=1.5, instances=instances)


def core_of(topo: Topology) -> dict[int, PhysicalCore]:
    return {cpu: core for core in topo.cores for cpu in core.siblings}


def nodes_of(topo: Topology, cpus: Iterable[int]) -> set[tuple[int, int]]:
    by_cpu = core_of(topo)
    return {(by_cpu[c].socket, by_cpu[c].node) for c in cpus}


def sockets_of(topo: Topology, cpus: Iterable[int]) -> set[int]:
    by_cpu = core_of(topo)
    return {by_cpu[c].socket for c in cpus}


def assert_valid(plan: Plan, placed: Plan, topo: Topology) -> None:
    """Same plan, one pinning CPU per thread, no physical core shared between instances."""
    assert (placed.cores, placed.batch, placed.latency_ms) == (
        plan.cores,
        plan.batch,
        plan.latency_ms,
    )
    assert [(i.threads, i.batch) for i in placed.instances] == [
        (i.threads, i.batch) for i in plan.instances
    ]
    pinning = set(topo.cpu_ids())
    by_cpu = core_of(topo)
    used_cores: list[PhysicalCore] = []
    for inst in placed.instances:
        assert len(inst.cores) == inst.threads
        assert set(inst.cores) <= pinning
        used_cores += [by_cpu[c] for c in inst.cores]
    assert len(used_cores) == len(set(used_cores))  # no core, hence no sibling, used twice


SMT_2X32 = synthetic_topology(sockets=2, cores_per_socket=32, threads_per_core=2)


def test_allocate_disjoint_without_siblings_on_smt_machine() -> None:
    plan = make_plan([16, 8, 8, 4, 4, 2, 2, 1, 1])
    placed = allocate(plan, SMT_2X32)
    assert_valid(plan, placed, SMT_2X32)
    all_cpus = [c for inst in placed.instances for c in inst.cores]
    assert max(all_cpus) < 64  # never a second hyper-thread
    assert all(len(sockets_of(SMT_2X32, i.cores)) == 1 for i in placed.instances)


def test_sixteen_threads_land_in_one_socket_on_adjacent_cores() -> None:
    placed = allocate(make_plan([16]), SMT_2X32)
    assert placed.instances[0].cores == tuple(range(16))


def test_four_threads_stay_in_one_node_on_two_by_two_machine() -> None:
    topo = synthetic_topology(sockets=2, cores_per_socket=8, nodes_per_socket=2)
    plan = make_plan([4, 2, 4, 1, 4, 1])  # 16 threads on 4 nodes of 4 cores
    placed = allocate(plan, topo)
    assert_valid(plan, placed, topo)
    assert all(len(nodes_of(topo, i.cores)) == 1 for i in placed.instances)


def test_instance_spills_across_nodes_of_one_socket_before_sockets() -> None:
    topo = synthetic_topology(sockets=2, cores_per_socket=16, nodes_per_socket=2)
    placed = allocate(make_plan([12, 8]), topo)
    big, small = placed.instances
    assert len(sockets_of(topo, big.cores)) == 1
    assert len(nodes_of(topo, big.cores)) == 2
    assert len(nodes_of(topo, small.cores)) == 1
    assert not set(big.cores) & set(small.cores)


def test_forty_threads_span_sockets_only_because_they_must() -> None:
    plan = make_plan([8, 40, 8])
    placed = allocate(plan, SMT_2X32)
    assert_valid(plan, placed, SMT_2X32)
    small1, big, small2 = placed.instances
    assert sockets_of(SMT_2X32, big.cores) == {0, 1}
    assert sorted(big.cores) == list(range(40))  # a whole socket plus 8 of the other
    assert len(sockets_of(SMT_2X32, small1.cores)) == len(sockets_of(SMT_2X32, small2.cores)) == 1
    assert len(sockets_of(SMT_2X32, allocate(make_plan([32]), SMT_2X32).instances[0].cores)) == 1


def test_best_fit_keeps_the_big_hole() -> None:
    # Node 0 has 8 usable cores, node 1 only 4 (e.g. taskset): a 4-thread instance takes node 1.
    cores = [PhysicalCore(0, 0, i, (i,)) for i in range(8)]
    cores += [PhysicalCore(0, 1, i, (i,)) for i in range(8, 12)]
    topo = Topology(tuple(cores))
    assert allocate(make_plan([4]), topo).instances[0].cores == (8, 9, 10, 11)
    both = allocate(make_plan([4, 8]), topo)
    assert [len(nodes_of(topo, i.cores)) for i in both.instances] == [1, 1]


def test_spill_uses_fewest_nodes() -> None:
    # Free cores per node 1, 4, 4: seven threads take the two 4-core nodes, not all three.
    cores = [PhysicalCore(0, node, i, (i,)) for i, node in enumerate([0, 1, 1, 1, 1, 2, 2, 2, 2])]
    topo = Topology(tuple(cores))
    placed = allocate(make_plan([7]), topo)
    assert nodes_of(topo, placed.instances[0].cores) == {(0, 1), (0, 2)}
    assert placed.instances[0].cores == (1, 2, 3, 4, 5, 6, 7)


def test_spill_remainder_goes_to_the_tightest_node() -> None:
    # Nodes of 4, 4 and 3 cores: 7 threads take node 0 and node 2, leaving node 1 for a 4.
    cores = [PhysicalCore(0, node, i, (i,)) for i, node in enumerate([0] * 4 + [1] * 4 + [2] * 3)]
    topo = Topology(tuple(cores))
    big, small = allocate(make_plan([7, 4]), topo).instances
    assert big.cores == (0, 1, 2, 3, 8, 9, 10)
    assert small.cores == (4, 5, 6, 7)


def test_exact_search_fixes_best_fit_decreasing_failure() -> None:
    # Two nodes of 10: best-fit decreasing packs 4+4 together and must split a 3; 4+3+3 twice fits.
    topo = synthetic_topology(sockets=1, cores_per_socket=20, nodes_per_socket=2)
    plan = make_plan([4, 4, 3, 3, 3, 3])
    placed = allocate(plan, topo)
    assert_valid(plan, placed, topo)
    assert all(len(nodes_of(topo, i.cores)) == 1 for i in placed.instances)


def test_too_many_threads_raises() -> None:
    with pytest.raises(TopologyError, match="plan needs 65 cores but only 64 physical cores"):
        allocate(make_plan([33, 32]), SMT_2X32)
    with pytest.raises(TopologyError, match=r"\(CPUs 0-1\)"):
        allocate(make_plan([3]), synthetic_topology(1, 2))


def test_order_preserved_and_deterministic() -> None:
    plan = make_plan([2, 8, 1, 4], cores=64)
    first = allocate(plan, SMT_2X32)
    assert [i.threads for i in first.instances] == [2, 8, 1, 4]
    assert first == allocate(plan, SMT_2X32)
    assert first.instances[1].cores == tuple(range(8))  # biggest placed first


def test_existing_cores_are_replaced() -> None:
    plan = Plan(cores=2, batch=1, latency_ms=1.0, instances=(InstanceSpec(2, 1, (40, 41)),))
    assert allocate(plan, SMT_2X32).instances[0].cores == (0, 1)


def test_empty_plan() -> None:
    plan = Plan(cores=4, batch=0, latency_ms=0.0)
    assert allocate(plan, SMT_2X32) == plan


@st.composite
def machines_and_divisor_plans(draw: st.DrawFn) -> tuple[Topology, list[int]]:
    sockets = draw(st.integers(1, 2))
    nodes_per_socket = draw(st.integers(1, 2))
    node_size = draw(st.sampled_from([4, 6, 8, 12, 16]))
    topo = synthetic_topology(
        sockets, node_size * nodes_per_socket, draw(st.integers(1, 2)), nodes_per_socket
    )
    divisors = [d for d in range(1, node_size + 1) if node_size % d == 0]
    threads = draw(st.lists(st.sampled_from(divisors), min_size=1, max_size=24))
    while sum(threads) > topo.num_cores:
        threads.pop()
    return topo, threads


@settings(max_examples=150, deadline=None)
@given(machines_and_divisor_plans())
def test_property_divisor_sized_instances_stay_in_one_node(
    case: tuple[Topology, list[int]],
) -> None:
    topo, threads = case
    plan = make_plan(threads)
    placed = allocate(plan, topo)
    assert_valid(plan, placed, topo)
    assert all(len(nodes_of(topo, i.cores)) == 1 for i in placed.instances)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 12),
    st.lists(st.integers(1, 40), min_size=1, max_size=20),
)
def test_property_any_fitting_plan_is_valid(
    sockets: int, nodes_per_socket: int, node_size: int, threads: list[int]
) -> None:
    topo = synthetic_topology(sockets, node_size * nodes_per_socket, 1, nodes_per_socket)
    while threads and sum(threads) > topo.num_cores:
        threads.pop()
    plan = make_plan(threads)
    placed = allocate(plan, topo)
    assert_valid(plan, placed, topo)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 12), st.data())
def test_property_lone_instance_spans_fewest_nodes_and_sockets(
    sockets: int, nodes_per_socket: int, node_size: int, data: st.DataObject
) -> None:
    socket_size = node_size * nodes_per_socket
    topo = synthetic_topology(sockets, socket_size, 1, nodes_per_socket)
    threads = data.draw(st.integers(1, topo.num_cores))
    cores = allocate(make_plan([threads]), topo).instances[0].cores
    assert len(nodes_of(topo, cores)) == -(-threads // node_size)
    assert len(sockets_of(topo, cores)) == -(-threads // socket_size)


# --------------------------------------------------------------------------------------------
# check_cores, machine_info
# --------------------------------------------------------------------------------------------


def test_check_cores() -> None:
    topo = synthetic_topology(1, 4)
    check_cores(1, topo)
    check_cores(4, topo)
    with pytest.raises(
        TopologyError, match="asked for 5 cores but this machine gives this process only 4"
    ):
        check_cores(5, topo)
    with pytest.raises(TopologyError, match="asked for 0 cores"):
        check_cores(0, topo)


def test_machine_info_from_fake_sysfs(tmp_path: Path, smt_sysfs: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Fake Xeon 9000\nflags\t: avx\n")
    usable = read_topology(smt_sysfs, allowed=set(range(8)))
    info = machine_info(usable, sysfs_root=smt_sysfs, cpuinfo_path=cpuinfo)
    assert info.cpu_model == "Fake Xeon 9000"
    assert (info.physical_cores, info.usable_cores) == (64, 8)
    assert (info.sockets, info.numa_nodes, info.smt) == (2, 2, True)
    assert info.logical_cpus == os.cpu_count()


def test_machine_info_json_round_trip_and_validation() -> None:
    info = MachineInfo("cpu", 128, 64, 16, 2, 4, True)
    data = info.to_json()
    assert data["usable_cores"] == 16
    assert MachineInfo.from_json(data) == info
    with pytest.raises(ValueError, match="sockets"):
        MachineInfo.from_json({**data, "sockets": "2"})
    with pytest.raises(ValueError, match="smt"):
        MachineInfo.from_json({**data, "smt": 1})
    with pytest.raises(ValueError, match="logical_cpus"):
        MachineInfo.from_json({k: v for k, v in data.items() if k != "logical_cpus"})


def test_machine_info_on_real_machine() -> None:
    info = machine_info()
    assert info.cpu_model
    assert 1 <= info.usable_cores <= info.physical_cores
    assert info.physical_cores <= info.logical_cpus
    assert info.sockets >= 1 and info.numa_nodes >= 1
