"""Pruned sweeps: the optimal plans from the pruned profile equal those from the full one where
the assumption holds, and stay within `Violations.loss_bound` of them where it does not."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packrat.errors import ProfileError
from packrat.optimizer import LatencyTable, PlanTable
from packrat.profiler.profile_file import load_profile
from packrat.profiler.prune import (
    CellPlanner,
    Order,
    PruneConfig,
    Scaling,
    SkipReason,
    lower_bounds,
    replay_sweep,
    violations,
)

PAPER = Path(__file__).resolve().parents[1] / "fixtures" / "paper-profiles"

Cells = dict[tuple[int, int], float]


def powers_of_two(max_batch: int) -> tuple[int, ...]:
    return tuple(2**k for k in range(max_batch.bit_length()) if 2**k <= max_batch)


def optimum(cells: Cells, config: PruneConfig, batch: int) -> tuple[float, int, int]:
    """(latency, instances, cores) of the plan the consumer of `cells` picks for `batch`."""
    if not cells:  # every cell skipped: only right when no plan fits any asked batch
        return math.inf, 0, 0
    table = LatencyTable.from_cells(cells)
    if config.interpolate:
        table = table.interpolated()
    solver = PlanTable(table, config.cores, max(config.asked))
    latency = solver.latency_ms(config.cores, batch)
    if math.isinf(latency):
        return latency, 0, 0
    plan = solver.plan(config.cores, batch)
    return latency, len(plan.instances), sum(i.threads for i in plan.instances)


def assert_same_plans(full: Cells, config: PruneConfig) -> Cells:
    replay = replay_sweep(config, full)
    for batch in config.asked:
        assert optimum(replay.measured, config, batch) == optimum(full, config, batch), batch
    assert_rows_are_prefixes(replay.measured, config)
    return replay.measured


def assert_rows_are_prefixes(measured: Cells, config: PruneConfig) -> None:
    """Skips take row suffixes: each row's measured batches are its smallest grid batches."""
    for t in config.threads:
        row = [b for b in config.batches if (t, b) in measured]
        assert row == list(config.batches[: len(row)]), (t, row)


def replay_resumed(
    config: PruneConfig, full: Cells, resumed: Mapping[tuple[int, int], float]
) -> Cells:
    """A sweep resumed from a profile holding `resumed`, replayed against `full`."""
    planner = CellPlanner(config, measured=resumed)
    while (cell := planner.next_cell()) is not None:
        planner.record(*cell, full[cell])
    return planner.measured


def latency_array(cells: Cells) -> npt.NDArray[np.float64]:
    return LatencyTable.from_cells(cells).latency_ms


@st.composite
def assumed_tables(draw: st.DrawFn) -> tuple[Cells, PruneConfig]:
    """A table meeting the assumptions, ties included, and a sweep configuration for it.

    Built to meet them from any t' (Scaling.ANY); then, like the published GPT-2 and BERT
    profiles, thread counts other than powers of two may be made slower, which only the
    weaker scalings still allow.
    """
    cores = draw(st.integers(1, 12))
    grid = powers_of_two(draw(st.sampled_from([1, 2, 4, 8, 16, 32])))
    factor = st.sampled_from([1.0, 1.0, 1.25, 1.5, 2.0, 3.0])  # 1.0: assumption met with equality
    lat = np.zeros((cores, len(grid)))
    for i in range(cores):
        for j in range(len(grid)):
            floor = draw(st.integers(1, 40)) if i == j == 0 else 0.0
            if i > 0:
                floor = max(floor, lat[i - 1, j] * i / (i + 1))
            if j > 0:
                floor = max(floor, lat[i, j - 1])
            lat[i, j] = floor * draw(factor)
    slowdown = draw(st.sampled_from([1.0, 1.0, 1.5, 3.0]))
    for i in range(cores):
        if (i + 1) & i:  # not a power of two
            lat[i] *= slowdown
    scalings = list(Scaling) if slowdown == 1.0 else [Scaling.ONE_THREAD, Scaling.POWERS_OF_TWO]
    cells = {(i + 1, b): float(lat[i, j]) for i in range(cores) for j, b in enumerate(grid)}
    asked = draw(st.lists(st.integers(1, 2 * grid[-1]), min_size=1, max_size=6, unique=True))
    config = PruneConfig(
        cores=cores,
        batches=grid,
        asked=tuple(sorted(asked)),
        interpolate=draw(st.booleans()),
        order=draw(st.sampled_from(Order)),
        scaling=draw(st.sampled_from(scalings)),
    )
    return cells, config


@settings(max_examples=300)
@given(assumed_tables())
def test_pruned_sweep_keeps_every_optimal_plan(case: tuple[Cells, PruneConfig]) -> None:
    full, config = case
    assert_same_plans(full, config)


@st.composite
def dipped_tables(draw: st.DrawFn) -> tuple[Cells, PruneConfig]:
    """Tables meeting the assumption whose latency falls as the batch grows in places.

    Thread counts that are no source get a bump: a run of their batch sizes made slower, so
    latency dips after it. As targets slower cells only meet the assumption better, and as no
    source they bound nothing.
    """
    cells, config = draw(assumed_tables())
    scaling = draw(st.sampled_from([Scaling.ONE_THREAD, Scaling.POWERS_OF_TWO]))
    config = replace(config, scaling=scaling)
    dipped = dict(cells)
    grid = config.batches
    for t in config.threads:
        if scaling.sources(config.cores)[t - 1]:
            continue
        start = draw(st.integers(0, len(grid) - 1))
        stop = draw(st.integers(start, len(grid) - 1))  # the dip: grid[stop] is not slowed
        factor = draw(st.sampled_from([1.0, 1.5, 3.0, 10.0]))
        for b in grid[start:stop]:
            dipped[(t, b)] *= factor
    return dipped, config


@settings(max_examples=300)
@given(dipped_tables())
def test_batch_dips_need_no_assumption(case: tuple[Cells, PruneConfig]) -> None:
    # The optimizer plans on each row's running maximum; with skipped cells inside a row, the
    # full profile's maximum would carry a slow skipped cell into the larger batches and the
    # pruned one's would not, and the pruned optimum could come out faster than the full one.
    full, config = case
    assert_same_plans(full, config)


def test_a_cell_that_bounds_a_larger_batch_through_a_dip_is_measured() -> None:
    # No plan for B = 2 on one core can hold (1, 1), but the optimizer plans (1, 2) at
    # max(3, 2) = 3 ms: skipping (1, 1) would plan it at 2 ms.
    full = {(1, 1): 3.0, (1, 2): 2.0}
    config = PruneConfig(1, (1, 2), (2,))
    assert optimum(full, config, 2)[0] == 3.0
    assert assert_same_plans(full, config) == full


@st.composite
def revealed_tables(draw: st.DrawFn) -> tuple[Cells, PruneConfig, Cells]:
    """A table where one thread count is 1 / (1 - v) times faster than the assumption allows
    at every batch, and a resumed profile whose cells show it: each source t' below it and
    the fast one itself, at the smallest batch."""
    cores = draw(st.integers(2, 10))
    grid = powers_of_two(draw(st.sampled_from([1, 2, 4, 8, 16, 32])))
    scaling = draw(st.sampled_from(Scaling))
    sources = scaling.sources(cores)
    fast = draw(st.integers(2, cores))
    v = draw(st.sampled_from([0.1, 0.3, 0.6]))
    growth = [draw(st.sampled_from([1.0, 1.25, 1.5, 2.0])) for _ in grid[1:]]
    work = np.cumprod([float(draw(st.integers(1, 40))), *growth])  # core-ms, linear scaling
    slower = st.sampled_from([1.0, 1.0, 1.5, 3.0])  # no source: may be slower, and dip
    lat = np.array(
        [
            [w / t * (1.0 if sources[t - 1] or t == fast else draw(slower)) for w in work]
            for t in range(1, cores + 1)
        ]
    )
    lat[fast - 1] *= 1 - v
    cells = {(t, b): float(lat[t - 1, j]) for t in range(1, cores + 1) for j, b in enumerate(grid)}
    shown = {(t, grid[0]): cells[(t, grid[0])] for t in range(1, fast + 1) if sources[t - 1]}
    shown[(fast, grid[0])] = cells[(fast, grid[0])]
    asked = draw(st.lists(st.integers(1, 2 * grid[-1]), min_size=1, max_size=6, unique=True))
    config = PruneConfig(
        cores=cores,
        batches=grid,
        asked=tuple(sorted(asked)),
        interpolate=draw(st.booleans()),
        order=draw(st.sampled_from(Order)),
        scaling=scaling,
    )
    return cells, config, shown


@st.composite
def broken_tables(draw: st.DrawFn) -> tuple[Cells, PruneConfig]:
    """Tables breaking the assumption, pruned with a tolerance: cells of one meeting it made up
    to v faster (super-linear speed-ups of up to 1 / (1 - v), and batch dips), or one thread
    count 1 / (1 - v) times as fast as linear scaling at every batch (`revealed_tables`)."""
    if draw(st.booleans()):
        cells, config, _ = draw(revealed_tables())
    else:
        cells, config = draw(assumed_tables())
        v = draw(st.sampled_from([0.05, 0.1, 0.2, 0.4, 0.7]))
        faster = st.sampled_from([1.0, 1.0, 1 - v / 2, 1 - v])
        cells = {cell: ms * draw(faster) for cell, ms in cells.items()}
    tolerance = draw(st.sampled_from([0.0, 0.0, 0.05, 0.1]))
    return cells, replace(config, tolerance=tolerance, adapt=draw(st.booleans()))


@settings(max_examples=300)
@given(broken_tables())
def test_a_broken_assumption_costs_at_most_the_loss_bound(case: tuple[Cells, PruneConfig]) -> None:
    full, config = case
    measured = replay_sweep(config, full).measured
    assert_rows_are_prefixes(measured, config)
    bound = violations(latency_array(full), config.scaling, config.tolerance).loss_bound
    for batch in config.asked:
        pruned, best = optimum(measured, config, batch), optimum(full, config, batch)
        if bound == 1.0:  # the assumption holds within the tolerance: exact
            assert pruned == best, batch
        elif math.isinf(best[0]):
            assert math.isinf(pruned[0]), batch
        else:  # never faster than the full profile (it only lacks cells), and not much slower
            assert best[0] <= pruned[0] <= best[0] * bound * (1 + 1e-9), batch


@settings(max_examples=200)
@given(revealed_tables())
def test_adapting_is_exact_when_measured_cells_show_the_violation_first(
    case: tuple[Cells, PruneConfig, Cells],
) -> None:
    full, config, shown = case
    measured = replay_resumed(config, full, shown)
    for batch in config.asked:
        assert optimum(measured, config, batch) == optimum(full, config, batch), batch


def test_a_violation_costs_at_most_its_bound_and_adapting_to_a_shown_one_is_exact() -> None:
    # 2 threads at b = 2 take 7.07 ms: 0.7 of the 20.2 / 2 that no super-linear speed-up from
    # one thread allows, so any loss is within 1 / 0.7.
    full = {(1, 1): 10.0, (1, 2): 20.2, (2, 1): 3.5, (2, 2): 7.07}
    config = PruneConfig(2, (1, 2), (2,))
    bound = violations(latency_array(full)).loss_bound
    assert bound == pytest.approx(1 / 0.7)
    # Nothing measured shows the speed-up: any plan with (2, 2) is bounded by 20.2 / 2 = 10.1,
    # slower than two instances (1, 1), so the row of 2 threads is skipped and the plan for
    # B = 2 takes 10 ms instead of 7.07.
    pruned = replay_sweep(config, full).measured
    assert set(pruned) == {(1, 1), (1, 2)}
    assert optimum(full, config, 2)[0] == 7.07
    assert optimum(pruned, config, 2)[0] == 10.0 <= 7.07 * bound
    # A resumed profile holding (2, 1) shows 2 threads 1 / 0.7 times faster than one: adapting,
    # the pair (1, 2) bounds with that tolerance, and (2, 2) is measured.
    assert (2, 2) in replay_resumed(config, full, {(2, 1): 3.5})
    assert (2, 2) not in replay_resumed(replace(config, adapt=False), full, {(2, 1): 3.5})


def test_published_profile_is_pruned_and_plans_are_unchanged() -> None:
    profile = load_profile(PAPER / "cloudlab-c6420" / "resnet50_latency.csv")
    full = {k: v.mean_ms for k, v in profile.cells.items()}
    grid = powers_of_two(1024)
    config = PruneConfig(cores=16, batches=grid, asked=grid)
    measured = assert_same_plans(full, config)
    assert len(measured) < 0.75 * len(full)
    assert sum(full[c] for c in measured) < 0.5 * sum(full.values())  # the slow cells go


@pytest.mark.parametrize(("model", "any_changes"), [("gpt2", True), ("bert", False)])
def test_odd_thread_slowdowns_break_any_scaling_but_not_powers_of_two(
    model: str, any_changes: bool
) -> None:
    profile = load_profile(PAPER / "cloudlab-c6420" / f"{model}_latency.csv")
    full = {k: v.mean_ms for k, v in profile.cells.items()}
    grid = powers_of_two(1024)
    found = violations(profile.latency_table().latency_ms, Scaling.ANY)
    assert found.worst_ratio < 0.6
    assert_same_plans(full, PruneConfig(16, grid, grid))
    risky = PruneConfig(16, grid, grid, scaling=Scaling.ANY)
    pruned = replay_sweep(risky, full).measured
    changed = 0
    for b in grid:
        after, before = optimum(pruned, risky, b)[0], optimum(full, risky, b)[0]
        assert before <= after <= before * found.loss_bound
        changed += after != before
    assert bool(changed) is any_changes


@pytest.mark.parametrize("interpolate", [False, True])
def test_two_cores_every_batch_size(interpolate: bool) -> None:
    # BERT-base measured here (ms); the server plans every B on the interpolated table.
    one = (243.2, 447.8, 881.1, 1742.1, 3460.3, 6901.0, 13822.0)
    two = (133.1, 237.0, 458.0, 901.7, 1801.6, 3606.4, 7397.1)
    full = {(t, 2**k): ms for t, row in ((1, one), (2, two)) for k, ms in enumerate(row)}
    config = PruneConfig(2, powers_of_two(64), tuple(range(1, 65)), interpolate=interpolate)
    measured = assert_same_plans(full, config)
    if not interpolate:  # (2, 64) >= (2, 32) and >= (1, 64) / 2: slower than 2 x (1, 32)
        assert set(full) - set(measured) == {(2, 64)}


def test_batches_above_the_largest_asked_are_skipped() -> None:
    full = {(t, b): 10.0 * b / t for t in (1, 2) for b in powers_of_two(64)}
    replay = replay_sweep(PruneConfig(2, powers_of_two(64), (1, 2, 3, 8)), full)
    above = {(s.threads, s.batch) for s in replay.skipped if s.reason is SkipReason.ABOVE_ASKED}
    assert above == {(t, b) for t in (1, 2) for b in (16, 32, 64)}


def test_next_cell_repeats_until_recorded_and_resumes_from_measured() -> None:
    config = PruneConfig(2, (1, 2), (1, 2), order=Order.BATCH_MAJOR)
    planner = CellPlanner(config, measured={(1, 1): 10.0})
    first = planner.next_cell()
    assert first == (2, 1) and planner.next_cell() == first
    planner.record(2, 1, 6.0)
    assert planner.next_cell() == (1, 2)
    assert planner.undecided == 2


def test_skips_explain_themselves() -> None:
    full = {(1, 1): 10.0, (1, 2): 20.0, (1, 4): 45.0, (2, 1): 6.0, (2, 2): 11.0, (2, 4): 50.0}
    replay = replay_sweep(PruneConfig(2, (1, 2, 4), (1, 2, 4)), full)
    (skip,) = replay.skipped
    assert (skip.threads, skip.batch, skip.reason) == (2, 4, SkipReason.NOT_OPTIMAL)
    # Any plan for B = 4 with (2, 4) takes >= 45 / 2 ms (no super-linear speed-up over (1, 4));
    # two instances (1, 2) take 20 ms.
    assert skip.best_ms == 20.0 and skip.asked_batch == 4
    assert skip.lower_bound_ms == pytest.approx(22.5)
    assert "B=4" in skip.describe()


def test_record_and_config_validation() -> None:
    planner = CellPlanner(PruneConfig(2, (1, 2), (2,)))
    with pytest.raises(ProfileError, match="grid"):
        planner.record(3, 1, 5.0)
    with pytest.raises(ProfileError, match="> 0"):
        planner.record(1, 1, math.nan)
    with pytest.raises(ProfileError, match="increasing"):
        PruneConfig(2, (2, 1), (2,))
    with pytest.raises(ProfileError, match="tolerance"):
        PruneConfig(2, (1, 2), (2,), tolerance=1.0)
    with pytest.raises(ProfileError, match="asked"):
        PruneConfig(2, (1, 2), ())


def test_lower_bounds_use_smaller_batches_and_source_thread_counts() -> None:
    lat = np.array([[10.0, np.nan], [np.nan, np.nan], [9.0, np.nan], [np.nan, np.nan]])
    pow2 = lower_bounds(lat, Scaling.POWERS_OF_TWO)
    np.testing.assert_allclose(pow2[:, 1], [10.0, 5.0, 9.0, 2.5], rtol=1e-6)
    anyt = lower_bounds(lat, Scaling.ANY)
    np.testing.assert_allclose(anyt[:, 1], [10.0, 5.0, 9.0, 27.0 / 4], rtol=1e-6)
    assert anyt[0, 0] == 10.0  # measured cells keep their latency


def test_violations_count_dips_and_superlinear_speedups() -> None:
    lat = np.array([[10.0, 9.0], [4.0, 8.0]])  # b dips at t=1; t=2 is 2.5x faster at b=1
    found = violations(lat, Scaling.ANY)
    assert (found.batch_pairs, found.thread_pairs) == (1, 1)
    assert found.worst_ratio == pytest.approx(0.8)
    assert found.loss_bound == pytest.approx(1.25)
    assert violations(lat, Scaling.ANY, tolerance=0.25).thread_pairs == 0
    assert violations(lat, Scaling.ANY, tolerance=0.25).loss_bound == 1.0


def test_batch_dips_do_not_count_against_the_loss_bound() -> None:
    lat = np.array([[10.0, 5.0], [5.0, 5.0]])  # t=1 dips; t=2 is exactly twice as fast
    found = violations(lat, Scaling.ANY)
    assert found.batch_pairs == 1
    assert found.worst_ratio == 1.0 and found.loss_bound == 1.0
