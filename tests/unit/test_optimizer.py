"""The optimizer against brute force on the table it plans on (the profile made non-decreasing
in the batch), its two solvers against each other, and against the paper's published BERT
plans."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packrat.errors import PlanError
from packrat.optimizer import LatencyTable, PlanTable, optimize
from packrat.optimizer.levels import LevelSolver
from packrat.optimizer.merge import MergeSolver
from packrat.types import Plan

PAPER = Path(__file__).resolve().parents[1] / "fixtures" / "paper-profiles"


def brute_force(table: LatencyTable, cores: int, batch: int) -> tuple[float, int, int] | None:
    """Lexicographic min (latency, instances, cores) over every multiset of cells, or None.

    Enumerates every plan outright: memoizing on the lexicographic key would be wrong, since a
    sub-plan's lower latency can be hidden by a slower instance while its extra cores are not.
    """
    cells = [(t, b, ms) for t, b, ms in table.cells() if t <= cores and b <= batch]
    best: tuple[float, int, int] | None = None

    def walk(start: int, c_left: int, b_left: int, worst: float, n: int, used: int) -> None:
        nonlocal best
        if b_left == 0:
            key = (worst, n, used)
            best = key if best is None or key < best else best
            return
        for i in range(start, len(cells)):  # non-decreasing cell index: each multiset once
            t, b, ms = cells[i]
            if t <= c_left and b <= b_left:
                walk(i, c_left - t, b_left - b, max(worst, ms), n + 1, used + t)

    walk(0, cores, batch, 0.0, 0, 0)
    return best


@st.composite
def tables(draw: st.DrawFn) -> LatencyTable:
    threads = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4, unique=True))
    batches = draw(st.lists(st.integers(1, 7), min_size=1, max_size=4, unique=True))
    threads.sort()
    batches.sort()
    # Few distinct values, so that equal latencies (and so the tie-break) are common.
    values = st.one_of(st.just(math.nan), st.integers(1, 6).map(float))
    lat = np.array([[draw(values) for _ in batches] for _ in threads], dtype=np.float64)
    if not np.isfinite(lat).any():
        lat[0, 0] = 1.0
    return LatencyTable(tuple(threads), tuple(batches), lat)


@st.composite
def dense_tables(draw: st.DrawFn) -> LatencyTable:
    """Every batch size 1..N, as the interpolated profile the server plans on; some rows end
    early (NaN after), and values may dip as the batch grows."""
    threads = sorted(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4, unique=True)))
    width = draw(st.integers(1, 7))
    rows = []
    for _ in threads:
        length = draw(st.integers(1, width))
        values = [float(draw(st.integers(1, 6))) for _ in range(length)]
        rows.append(values + [math.nan] * (width - length))
    return LatencyTable(tuple(threads), tuple(range(1, width + 1)), np.array(rows))


def check_plan(table: LatencyTable, plan: Plan, cores: int, batch: int) -> None:
    """`plan` is valid on the table the optimizer plans on, with the latency it claims."""
    table = table.monotone_in_batch()
    assert plan.cores == cores and plan.batch == batch
    assert sum(i.batch for i in plan.instances) == batch
    assert sum(i.threads for i in plan.instances) <= cores
    lats = [table.get(i.threads, i.batch) for i in plan.instances]
    assert all(ms is not None for ms in lats)
    assert plan.latency_ms == max(ms for ms in lats if ms is not None)


@settings(max_examples=300, deadline=None)
@given(tables(), st.integers(1, 6), st.integers(1, 9))
def test_matches_brute_force_with_tie_break(table: LatencyTable, cores: int, batch: int) -> None:
    expected = brute_force(table.monotone_in_batch(), cores, batch)
    if expected is None:
        with pytest.raises(PlanError):
            optimize(table, cores, batch)
        return
    plan = optimize(table, cores, batch)
    check_plan(table, plan, cores, batch)
    assert (plan.latency_ms, len(plan.instances), plan.cores_used) == expected


@settings(max_examples=60, deadline=None)
@given(tables(), st.integers(1, 5), st.integers(1, 8))
def test_whole_table_filled_in_one_pass(
    table: LatencyTable, max_cores: int, max_batch: int
) -> None:
    """Every (c, b) <= (T, B) is a lookup in the one table, and equals brute force there."""
    pt = PlanTable(table, max_cores, max_batch)
    for c in range(1, max_cores + 1):
        for b in range(1, max_batch + 1):
            expected = brute_force(table.monotone_in_batch(), c, b)
            assert pt.latency_ms(c, b) == (math.inf if expected is None else expected[0])
            if expected is not None:
                plan = pt.plan(c, b)
                check_plan(table, plan, c, b)
                assert (len(plan.instances), plan.cores_used) == expected[1:]


@settings(max_examples=300, deadline=None)
@given(dense_tables(), st.integers(1, 6), st.integers(1, 9))
def test_every_batch_size_table_matches_brute_force(
    table: LatencyTable, cores: int, batch: int
) -> None:
    """Tables of every batch size 1..N take the merge solver; same optimum and tie-break."""
    expected = brute_force(table.monotone_in_batch(), cores, batch)
    pt = PlanTable(table, cores, batch)
    if expected is None:
        assert pt.latency_ms(cores, batch) == math.inf
        with pytest.raises(PlanError, match=f"no plan covers batch {batch}"):
            pt.plan(cores, batch)
        return
    plan = pt.plan(cores, batch)
    check_plan(table, plan, cores, batch)
    assert (plan.latency_ms, len(plan.instances), plan.cores_used) == expected


def random_profile(rng: np.random.Generator, cores: int, max_batch: int) -> LatencyTable:
    """A noisy Amdahl-style profile over every t <= cores and b <= max_batch, made monotone
    the way the optimizer plans on it."""
    threads = np.arange(1, cores + 1)[:, None]
    batches = np.arange(1, max_batch + 1)[None, :]
    serial, parallel = rng.uniform(0.5, 5), rng.uniform(10, 80)
    lat = batches * (serial + parallel / threads) + rng.uniform(0, 2) * threads
    lat = np.round(lat * rng.uniform(0.9, 1.1, lat.shape))  # ties, as in real tables
    cut = rng.integers(max_batch // 2, max_batch + 1, cores)  # rows that end early
    lat[np.arange(max_batch)[None, :] >= cut[:, None]] = np.nan
    table = LatencyTable(tuple(range(1, cores + 1)), tuple(range(1, max_batch + 1)), lat)
    return table.monotone_in_batch()


@pytest.mark.parametrize("seed", range(6))
def test_merge_and_level_solvers_agree_on_every_cell(seed: int) -> None:
    """The level solver is the exact reference on any table; on larger tables than brute
    force reaches, the merge solver gives the same latency everywhere and the same instance
    and core counts."""
    rng = np.random.default_rng(seed)
    cores, max_batch = 6, 20
    table = random_profile(rng, cores, max_batch)
    threads = np.array(table.threads, dtype=np.int64)
    batches = np.array(table.batches, dtype=np.int64)
    levels = LevelSolver(table.latency_ms, threads, batches, cores, max_batch)
    merge = MergeSolver(table.latency_ms, threads, cores, max_batch)
    np.testing.assert_array_equal(merge.latency_table_ms, levels.latency_table_ms)
    for c in range(1, cores + 1):
        for b in range(1, max_batch + 1):
            if not np.isfinite(levels.latency_table_ms[c, b]):
                continue
            (lat_l, inst_l), (lat_m, inst_m) = levels.instances(c, b), merge.instances(c, b)
            assert lat_m == lat_l
            assert len(inst_m) == len(inst_l)
            assert sum(i.threads for i in inst_m) == sum(i.threads for i in inst_l)
            assert sum(i.batch for i in inst_m) == b
            assert max(table.get(i.threads, i.batch) or math.inf for i in inst_m) == lat_m


def test_a_batch_that_measured_faster_than_a_smaller_one_is_not_planned_on_its_noise() -> None:
    # 3 requests measured 30 ms on one thread, 4 measured 24 ms (noise): 4 is taken at 30.
    table = LatencyTable.from_cells({(1, 1): 10.0, (1, 2): 20.0, (1, 3): 30.0, (1, 4): 24.0})
    assert table.monotone_in_batch().latency_ms.tolist() == [[10.0, 20.0, 30.0, 30.0]]
    plan = optimize(table, 1, 4)
    assert plan.latency_ms == 30.0


def test_monotone_in_batch_fills_from_above_and_never_lowers_a_cell() -> None:
    nan = math.nan
    table = LatencyTable(
        (1, 2), (1, 2, 4, 8, 16), np.array([[nan, 5.0, nan, 4.0, 9.0], [1.0, nan, 3.0, nan, nan]])
    )
    out = table.monotone_in_batch().latency_ms
    np.testing.assert_array_equal(out[0], [5.0, 5.0, 5.0, 5.0, 9.0])
    np.testing.assert_array_equal(out[1], [1.0, 3.0, 3.0, nan, nan])
    smooth = LatencyTable((1,), (1, 2, 3), np.array([[1.0, 2.0, 2.0]]))
    np.testing.assert_array_equal(smooth.monotone_in_batch().latency_ms, smooth.latency_ms)


def test_batch_need_not_be_profiled() -> None:
    # Powers of two only; 24 = 16 + 8 with two 1-thread instances beats anything else.
    table = LatencyTable.from_cells(
        {(t, b): b * 10.0 / t**0.5 for t in (1, 2) for b in (1, 2, 4, 8, 16, 32)}
    )
    plan = optimize(table, 2, 24)
    assert sorted(i.batch for i in plan.instances) == [8, 16]


def test_infeasible_batch_is_a_plan_error() -> None:
    table = LatencyTable.from_cells({(1, 4): 10.0, (2, 4): 6.0})
    with pytest.raises(PlanError, match="no plan covers batch 6"):
        optimize(table, 2, 6)
    with pytest.raises(PlanError, match="no plan covers batch 8 within 1 cores"):
        optimize(table, 1, 8)


def test_prefers_fewer_instances_then_fewer_cores() -> None:
    # All plans tie at 5 ms: one 2-thread instance beats two 1-thread ones, and a 2-thread
    # instance is not chosen over a 1-thread one of equal latency.
    table = LatencyTable.from_cells({(1, 2): 5.0, (2, 4): 5.0, (1, 4): 5.0})
    plan = optimize(table, 4, 4)
    assert [(i.threads, i.batch) for i in plan.instances] == [(1, 4)]


def test_paper_table2_bert_plans() -> None:
    from packrat.profiler.profile_file import load_profile

    table = load_profile(PAPER / "cloudlab-c6420" / "bert_latency.csv").latency_table()
    pt = PlanTable(table, 16, 1024)
    expected = {
        8: "<2,8,4>",
        16: "<4,4,4>",
        32: "<4,4,8>",
        64: "<4,4,16>",
        128: "<4,4,32>",
        256: "<8,2,32>",
        512: "<8,2,64>",
        1024: "<8,2,128>",
    }
    assert {b: pt.plan(16, b).describe() for b in expected} == expected


def test_paper_t14_plans_reach_the_exact_optimum() -> None:
    from packrat.profiler.profile_file import load_profile

    table = load_profile(PAPER / "cloudlab-c6420" / "bert_latency.csv").latency_table()
    pt = PlanTable(table, 14, 64)
    # The paper's mixed plan for B = 16 is <1,6,8> + <2,4,4>: max(L(6,8), L(4,4)).
    paper = max(table.get(6, 8) or math.inf, table.get(4, 4) or math.inf)
    assert pt.latency_ms(14, 16) == pytest.approx(paper)
    for b in (8, 16, 32):
        plan = pt.plan(14, b)
        check_plan(table, plan, 14, b)
        best = brute_force(
            LatencyTable.from_cells(
                {(t, bb): ms for t, bb, ms in table.cells() if bb <= b and t <= 14}
            ),
            14,
            b,
        )
        assert best is not None and plan.latency_ms == best[0]


def test_interpolated_table_fills_every_batch_size_linearly() -> None:
    table = LatencyTable.from_cells(
        {(1, 1): 10.0, (1, 4): 40.0, (1, 8): 72.0, (2, 2): 12.0, (2, 4): 20.0}
    )
    full = table.interpolated()
    assert full.batches == tuple(range(1, 9)) and full.threads == (1, 2)
    assert [full.get(1, b) for b in range(1, 9)] == [10.0, 20.0, 30.0, 40.0, 48.0, 56.0, 64.0, 72.0]
    # Thread count 2 was profiled from 2 to 4 only: nothing is made up outside that range.
    assert [full.get(2, b) for b in range(1, 9)] == [None, 12.0, 16.0, 20.0, None, None, None, None]
    assert all(full.get(t, b) == ms for t, b, ms in table.cells())


def test_interpolation_lets_one_instance_take_a_batch_between_profiled_sizes() -> None:
    # BERT-base here: a batch of 3 was only plannable as 2 + 1 on two 1-thread instances.
    table = LatencyTable.from_cells(
        {(1, 1): 243.0, (1, 2): 447.0, (1, 4): 870.0, (2, 1): 132.0, (2, 2): 233.5, (2, 4): 474.0}
    )
    assert PlanTable(table, 2, 4).plan(2, 3).describe() == "<1,1,2> + <1,1,1>"
    plan = PlanTable(table.interpolated(), 2, 4).plan(2, 3)
    assert plan.describe() == "<1,2,3>" and plan.latency_ms == pytest.approx(353.75)
