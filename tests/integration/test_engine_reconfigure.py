"""Reconfiguring an engine in place: new threads and cores, spares, growth, same answers."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from packrat.errors import TopologyError, WorkerError
from packrat.pool import Engine, EngineConfig, EngineState
from packrat.pool.affinity import child_pids, process_is_gone
from packrat.stats import SamplingPolicy
from packrat.types import InstanceSpec, Plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import pool_handlers  # noqa: E402
from test_engine import assert_same, cpu, leftover_children, plan_of, reference_outputs  # noqa: E402

pytestmark = pytest.mark.slow

WARM = SamplingPolicy(warmup_runs=1, min_runs=3, max_runs=5, max_time_s=2.0)


def _layout(engine: Engine) -> list[tuple[int, frozenset[int]]]:
    """(torch threads, the one CPU set all its threads share) per plan worker, as they say."""
    layout = []
    for info in engine.describe():
        (cores,) = set(info.affinity_by_thread.values())
        layout.append((info.threads, cores))
    return layout


def test_workers_that_cannot_move_are_started_on_each_layout_and_taken_over_again(
    tmp_path: Path,
) -> None:
    """A source whose workers cannot move (OpenVINO's) gets a worker loaded on each instance's
    own cores: a switch takes over an idle worker already on a layout, or starts one; the
    workers left idle stay while the pool has room, and the others stop."""
    if cpu(0) == cpu(1):
        pytest.skip("needs two CPUs")
    record = tmp_path / "record.txt"
    source = pool_handlers.PlacedSource(str(record), moves_in_place=False)
    one, two = (cpu(0),), (cpu(1),)
    both = tuple(sorted({cpu(0), cpu(1)}))
    singles = plan_of(InstanceSpec(1, 1, one), InstanceSpec(1, 1, two))
    swapped = plan_of(InstanceSpec(1, 1, two), InstanceSpec(1, 1, one))
    fat = plan_of(InstanceSpec(2, 2, both))
    config = EngineConfig(share_weights=False)
    with Engine(source, singles, config, pool_size=2) as engine:
        assert engine.infer([1, 2]) == [2, 4]
        first = engine.pool_pids

        done = engine.reconfigure(swapped)  # both layouts are there: no worker starts
        assert (done.retuned, done.spawned) == (0, 0)
        assert engine.pids == first[::-1]
        assert engine.infer([1, 2]) == [2, 4]

        done = engine.reconfigure(fat)  # a new worker on both cores; one single stops
        assert (done.retuned, done.spawned) == (0, 1)
        assert len(engine.pool_pids) == 2 and engine.pool_pids[1] == first[1]
        assert engine.infer([1, 2]) == [2, 4]

        every = [(1, one), (1, two), (2, both)]
        assert engine.reserve(2, spares=every) == 1  # pre-start the other single
        done = engine.reconfigure(singles)
        assert (done.retuned, done.spawned) == (0, 0)
        assert engine.infer([1, 2]) == [2, 4]
        assert len(engine.pool_pids) == 3  # reserve kept room for every layout it named
    loads = [line.removeprefix("load ") for line in record.read_text().splitlines()]
    cores = [",".join(map(str, c)) for c in (one, two, both, one)]
    assert sorted(loads[:2]) == sorted(cores[:2]) and loads[2:] == cores[2:]  # on their own


def test_spares_of_a_source_that_cannot_move_start_on_the_layouts_given(
    tmp_path: Path,
) -> None:
    """`spares`: a worker starts on each layout later plans use, beyond the plan's own."""
    if cpu(0) == cpu(1):
        pytest.skip("needs two CPUs")
    record = tmp_path / "record.txt"
    source = pool_handlers.PlacedSource(str(record), moves_in_place=False)
    one, two = (cpu(0),), (cpu(1),)
    singles = plan_of(InstanceSpec(1, 1, one), InstanceSpec(1, 1, two))
    spares = [(1, one), (2, tuple(sorted({cpu(0), cpu(1)})))]
    with Engine(source, singles, EngineConfig(share_weights=False), spares=spares) as engine:
        assert len(engine.pool_pids) == 3
        done = engine.reconfigure(plan_of(InstanceSpec(2, 2, spares[1][1])))
        assert (done.retuned, done.spawned) == (0, 0)
        assert engine.infer([1, 2]) == [2, 4]


def test_reserve_after_a_move_stops_the_idle_workers_on_layouts_no_longer_used(
    tmp_path: Path,
) -> None:
    """Workers that cannot move: after a move to other cores, `reserve` with the new spares
    stops the idle workers left on the old layouts and keeps those it names."""
    if cpu(0) == cpu(1):
        pytest.skip("needs two CPUs")
    source = pool_handlers.PlacedSource(str(tmp_path / "record.txt"), moves_in_place=False)
    one, two = (cpu(0),), (cpu(1),)
    both = tuple(sorted({cpu(0), cpu(1)}))
    fat = plan_of(InstanceSpec(2, 2, both))
    spares = [(1, one), (1, two)]
    with Engine(source, fat, EngineConfig(share_weights=False), spares=spares) as engine:
        pids = engine.pool_pids
        assert len(pids) == 3
        moved = engine.reconfigure(plan_of(InstanceSpec(1, 2, two)))  # the model keeps cpu(1)
        assert (moved.retuned, moved.spawned) == (0, 0) and engine.pids == [pids[2]]

        assert engine.reserve(1, spares=[(1, two), (1, one)]) == 0  # the worker on one stays
        assert engine.pool_pids == [pids[2], pids[1]]
        assert process_is_gone(pids[0])
        assert engine.reserve(1, spares=[(1, two)]) == 0
        assert engine.pool_pids == [pids[2]] and process_is_gone(pids[1])
        assert engine.infer([1, 2]) == [2, 4]


def test_a_worker_serving_on_a_layout_the_spares_leave_out_stops_after_the_next_switch(
    tmp_path: Path,
) -> None:
    """Workers that cannot move: `reserve` with spares that leave out the layout serving now
    (new plans after a recalibration) keeps the pool to as many workers as the spares: the
    new layout starts at the switch to it, and the worker it leaves idle stops."""
    if cpu(0) == cpu(1):
        pytest.skip("needs two CPUs")
    source = pool_handlers.PlacedSource(str(tmp_path / "record.txt"), moves_in_place=False)
    one, both = (cpu(0),), tuple(sorted({cpu(0), cpu(1)}))
    with Engine(source, plan_of(InstanceSpec(1, 2, one)), EngineConfig(share_weights=False),
                spares=[(1, one)]) as engine:  # fmt: skip
        (serving,) = engine.pool_pids
        assert engine.reserve(1, spares=[(2, both)]) == 0  # no room beside the one serving
        assert engine.reconfigure(plan_of(InstanceSpec(2, 2, both))).spawned == 1
        (started,) = engine.pool_pids
        assert started != serving and process_is_gone(serving)
        assert engine.infer([1, 2]) == [2, 4]


def test_workers_boot_seeing_only_the_models_cores_and_a_plan_beyond_them_widens_that(
    tmp_path: Path,
) -> None:
    """A model given some cores of a large server starts its workers on those cores, not the
    machine's; a later plan on other cores (a move) starts a worker there."""
    if cpu(0) == cpu(1):
        pytest.skip("needs two CPUs")
    record = tmp_path / "record.txt"
    one = plan_of(InstanceSpec(threads=1, batch=1, cores=(cpu(0),)))
    both = plan_of(InstanceSpec(1, 1, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    config = EngineConfig(share_weights=False)
    with Engine(pool_handlers.PlacedSource(str(record)), one, config,
                visible_cores=(cpu(0),)) as engine:  # fmt: skip
        assert engine.infer([3]) == [6]
        engine.reconfigure(both)  # starts a worker for the instance on cpu(1)
        assert engine.infer([3, 4]) == [6, 8]
    assert record.read_text().splitlines() == [f"load {cpu(0)}", f"load {cpu(1)}"]


def test_reconfigure_moves_workers_in_place_and_answers_stay_right(tmp_path: Path) -> None:
    source = pool_handlers.LinearSource(256, 64, seed=3)
    two = (cpu(0), cpu(1)) if cpu(0) != cpu(1) else (cpu(0),)
    fat = plan_of(InstanceSpec(len(two), 4, two))
    thin = plan_of(InstanceSpec(1, 2, (cpu(0),)), InstanceSpec(1, 2, (cpu(1),)))
    config = EngineConfig(weights_dir=tmp_path, start_timeout_s=120.0, batch_timeout_s=30.0)
    requests = pool_handlers.make_linear_requests(4, 256)
    expected = reference_outputs(source, requests)
    before = child_pids(os.getpid())
    with Engine(source, fat, config, pool_size=2) as engine:
        assert len(engine.pool_pids) == 2 and len(engine.pids) == 1
        pool = engine.pool_pids
        assert_same(engine.infer(requests), expected)

        done = engine.reconfigure(thin)
        assert (done.retuned, done.spawned) == (2, 0)  # the fat worker shrank, the spare joined
        assert engine.plan == thin and engine.pool_pids == pool  # no process started
        assert _layout(engine) == [(1, frozenset({cpu(0)})), (1, frozenset({cpu(1)}))]
        assert_same(engine.infer(requests), expected)

        done = engine.reconfigure(fat)
        assert (done.retuned, done.spawned) == (1, 0)  # the spare stays as it is, idle
        engine.measure(0, 64, WARM)  # a batch big enough for the thread pool to grow
        assert _layout(engine) == [(len(two), frozenset(two))]
        assert_same(engine.infer(requests), expected)

        three = plan_of(
            *(InstanceSpec(1, 1, (cpu(k),)) for k in range(3)), InstanceSpec(1, 1, (cpu(0),))
        )
        done = engine.reconfigure(three)
        assert done.spawned == 2 and len(engine.pool_pids) == 4  # grew: two new workers
        assert engine.pool_pids[:2] == pool
        assert_same(engine.infer(requests), expected)
        pids = engine.pool_pids
    assert engine.state is EngineState.CLOSED
    assert all(process_is_gone(pid) for pid in pids)
    assert leftover_children(before) == set()


def test_reconfigure_refuses_a_plan_off_our_cpus(tmp_path: Path) -> None:
    plan = plan_of(InstanceSpec(1, 1, (cpu(0),)))
    config = EngineConfig(weights_dir=tmp_path, start_timeout_s=120.0)
    with Engine(pool_handlers.LinearSource(), plan, config) as engine:
        outside = max(os.sched_getaffinity(0)) + 1000
        with pytest.raises(TopologyError, match="may not use"):
            engine.reconfigure(plan_of(InstanceSpec(1, 1, (outside,))))
        with pytest.raises(TopologyError, match="allocate"):
            engine.reconfigure(Plan(1, 1, 0.0, (InstanceSpec(1, 1),)))
        assert engine.state is EngineState.RUNNING and engine.plan == plan


def test_a_switch_whose_new_workers_fail_to_start_keeps_the_old_plan(tmp_path: Path) -> None:
    """Of the two workers a switch starts, one fails to load while the other still boots: the
    switch fails, both are stopped (the booting one must not send its Ready later, which the
    next command would read in place of its own reply), and the old plan keeps serving."""
    scripts = tmp_path / "boot"
    scripts.mkdir()
    source = pool_handlers.BootScriptSource(str(scripts))
    one = plan_of(InstanceSpec(1, 1, (cpu(0),)))
    three = plan_of(*(InstanceSpec(1, 1, (cpu(k),)) for k in range(3)))
    config = EngineConfig(share_weights=False, start_timeout_s=120.0, batch_timeout_s=30.0)
    before = child_pids(os.getpid())
    with Engine(source, one, config) as engine:
        pool = engine.pool_pids
        (scripts / "a").write_text("fail")
        (scripts / "b").write_text("sleep 5")
        with pytest.raises(WorkerError, match="switching to plan .* failed to load: ModelError"):
            engine.reconfigure(three)
        assert engine.state is EngineState.RUNNING
        assert engine.plan == one and engine.pool_pids == pool
        assert leftover_children(before) == set(pool)  # the booting worker was stopped too
        assert [engine.infer([float(k)]) for k in range(3)] == [[0.0], [2.0], [4.0]]

        # Once workers can start, the same switch works, and every answer is its own.
        done = engine.reconfigure(three)
        assert done.spawned == 2 and engine.plan == three
        for k in range(3):
            requests = [float(3 * k + j) for j in range(3)]
            assert engine.infer(requests) == [2.0 * r for r in requests]
        pids = engine.pool_pids
    assert all(process_is_gone(pid) for pid in pids)
    assert leftover_children(before) == set()


def test_a_switch_whose_new_worker_hangs_times_out_and_keeps_the_old_plan(tmp_path: Path) -> None:
    """A worker that does not become ready within start_timeout_s is killed, not left to send
    its Ready into the next exchange."""
    scripts = tmp_path / "boot"
    scripts.mkdir()
    source = pool_handlers.BootScriptSource(str(scripts))
    one = plan_of(InstanceSpec(1, 1, (cpu(0),)))
    two = plan_of(InstanceSpec(1, 1, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    config = EngineConfig(share_weights=False, start_timeout_s=120.0, batch_timeout_s=30.0)
    before = child_pids(os.getpid())
    with Engine(source, one, config) as engine:
        pool = engine.pool_pids
        (scripts / "a").write_text("sleep 600")
        # A short start timeout for the switch only: the first boot may take seconds here.
        engine._config = dataclasses.replace(config, start_timeout_s=1.0)
        with pytest.raises(WorkerError, match=r"1 worker\(s\) not ready within 1 s"):
            engine.reconfigure(two)
        engine._config = config
        (scripts / "a").unlink(missing_ok=True)  # stopped before it even read its script
        assert engine.state is EngineState.RUNNING and engine.plan == one
        assert engine.pool_pids == pool and leftover_children(before) == set(pool)
        assert engine.infer([1.0]) == [2.0]
        assert engine.reconfigure(two).spawned == 1
        assert engine.infer([1.0, 2.0]) == [2.0, 4.0]
    assert leftover_children(before) == set()


def test_spare_workers_that_fail_to_start_leave_the_pool_serving(tmp_path: Path) -> None:
    """`reserve` (spares for later plans, after a change of cores) whose workers fail: the
    error says so, the ones started are stopped, and the pool serves on as it was."""
    scripts = tmp_path / "boot"
    scripts.mkdir()
    source = pool_handlers.BootScriptSource(str(scripts))
    one = plan_of(InstanceSpec(1, 1, (cpu(0),)))
    config = EngineConfig(share_weights=False, start_timeout_s=120.0, batch_timeout_s=30.0)
    before = child_pids(os.getpid())
    with Engine(source, one, config) as engine:
        pool = engine.pool_pids
        (scripts / "a").write_text("fail")
        with pytest.raises(WorkerError, match="failed to load: ModelError"):
            engine.reserve(3)
        assert engine.state is EngineState.RUNNING and engine.pool_pids == pool
        assert leftover_children(before) == set(pool)
        assert engine.infer([1.0]) == [2.0]
        assert engine.reserve(2) == 1 and len(engine.pool_pids) == 2
        assert engine.infer([3.0]) == [6.0]
    assert leftover_children(before) == set()
