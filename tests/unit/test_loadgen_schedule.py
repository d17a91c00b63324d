"""Load generator schedules: Poisson counts and order, step phases, traces, bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packrat.bench.loadgen import (
    Bounds,
    ClosedLoop,
    OpenLoop,
    Phase,
    from_offsets,
    parse_steps,
    poisson,
    read_trace,
    steps,
)
from packrat.errors import PackratError
from packrat.workload.schedule import check


@pytest.mark.parametrize("seed", range(5))
def test_poisson_count_is_near_rate_times_duration(seed: int) -> None:
    schedule = poisson(50.0, 20.0, seed=seed)
    expected = 50.0 * 20.0
    # The count is Poisson(1000): 5 standard deviations is ~158.
    assert abs(schedule.num_requests - expected) < 5 * np.sqrt(expected)
    a = schedule.arrivals_s
    assert np.all(np.diff(a) >= 0)
    assert a[0] >= 0 and a[-1] < 20.0
    assert [p.name for p in schedule.phases] == ["poisson @ 50 rps"]
    assert schedule.duration_s == 20.0


def test_poisson_gaps_look_exponential() -> None:
    gaps = np.diff(poisson(200.0, 50.0, seed=3).arrivals_s)
    assert gaps.mean() == pytest.approx(1 / 200.0, rel=0.05)
    assert gaps.std() == pytest.approx(1 / 200.0, rel=0.1)  # exponential: std == mean


def test_seed_fixes_the_schedule() -> None:
    a, b, c = poisson(10, 10, seed=1), poisson(10, 10, seed=1), poisson(10, 10, seed=2)
    np.testing.assert_array_equal(a.arrivals_s, b.arrivals_s)
    assert a.num_requests != c.num_requests or not np.array_equal(a.arrivals_s, c.arrivals_s)


def test_arrivals_are_read_only() -> None:
    with pytest.raises(ValueError):
        poisson(10, 1).arrivals_s[0] = 5.0


def test_steps_make_named_consecutive_phases() -> None:
    schedule = steps([(5, 10), (40, 10), (5, 10)], seed=0)
    assert [(p.name, p.start_s, p.end_s) for p in schedule.phases] == [
        ("phase 0 @ 5 rps", 0.0, 10.0),
        ("phase 1 @ 40 rps", 10.0, 20.0),
        ("phase 2 @ 5 rps", 20.0, 30.0),
    ]
    index = schedule.phase_index()
    counts = np.bincount(index, minlength=3)
    for count, expected in zip(counts, (50, 400, 50), strict=True):
        assert abs(count - expected) < 5 * np.sqrt(expected)
    for i, phase in enumerate(schedule.phases):
        inside = schedule.arrivals_s[index == i]
        assert np.all((inside >= phase.start_s) & (inside < phase.end_s))
    assert np.all(np.diff(schedule.arrivals_s) >= 0)


def test_a_zero_rate_phase_has_no_arrivals() -> None:
    schedule = steps([(0, 2), (10, 1)], seed=0)
    assert np.all(schedule.arrivals_s >= 2.0)


def test_open_loops_are_validated() -> None:
    arrivals = np.array([0.5, 1.0])
    schedule = OpenLoop(arrivals, (Phase("a", 0.0, 1.0),))
    arrivals[0] = 0.75  # the schedule holds its own copy
    assert schedule.arrivals_s[0] == 0.5
    for bad_arrivals, phases, message in [
        ([1.0, 0.5], (Phase("a", 0.0, 1.0),), "sorted"),
        ([-1.0], (Phase("a", 0.0, 1.0),), ">= 0"),
        ([2.0], (Phase("a", 0.0, 1.0),), "after the last phase"),
        ([0.5], (Phase("a", 0.5, 1.0),), "starting at 0"),
        ([0.5], (Phase("a", 0.0, 1.0), Phase("b", 2.0, 3.0)), "must start where"),
    ]:
        with pytest.raises(PackratError, match=message):
            OpenLoop(np.array(bad_arrivals), phases)


def test_parse_steps() -> None:
    assert parse_steps("5:10, 40:2.5") == [(5.0, 10.0), (40.0, 2.5)]
    for bad in ("5", "5:x", "", "5:10,"):
        with pytest.raises(PackratError, match="RATE:SECONDS"):
            parse_steps(bad)


@pytest.mark.parametrize(
    ("phases", "message"),
    [([], "at least one"), ([(-1, 5)], "rate_rps"), ([(1, 0)], "duration_s")],
)
def test_bad_steps_are_refused(phases: list[tuple[float, float]], message: str) -> None:
    with pytest.raises(PackratError, match=message):
        steps(phases)


def test_schedules_beyond_the_bounds_are_refused() -> None:
    with pytest.raises(PackratError, match="more than the limit of 1000000"):
        poisson(1e9, 3600)  # refused before anything is drawn
    with pytest.raises(PackratError, match="limit of 100 .*--requests-max"):
        poisson(20, 10, bounds=Bounds(max_requests=100))
    with pytest.raises(PackratError, match="longer than the limit"):
        steps([(1, 3000), (1, 3000)])
    with pytest.raises(PackratError, match="more than the limit"):
        from_offsets([0.0, 1.0, 2.0], bounds=Bounds(max_requests=2))
    wide = from_offsets(np.arange(10.0))
    with pytest.raises(PackratError, match="more than the limit"):
        check(wide, Bounds(max_requests=5))
    with pytest.raises(PackratError, match="longer than"):
        check(ClosedLoop(2, duration_s=100.0), Bounds(max_duration_s=10.0))
    with pytest.raises(PackratError, match="more than"):
        check(ClosedLoop(2, requests=100), Bounds(max_requests=10))


def test_closed_loop_needs_a_stop() -> None:
    with pytest.raises(PackratError, match="duration, a request count"):
        ClosedLoop(4)
    with pytest.raises(PackratError, match="concurrency"):
        ClosedLoop(0, duration_s=1.0)
    assert ClosedLoop(4, duration_s=1.0).phase_name == "closed loop x 4"


def test_trace_one_offset_per_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.txt"
    path.write_text("# offsets\n0.5\n0.1\n\n2.0\n")
    schedule = read_trace(path)
    np.testing.assert_array_equal(schedule.arrivals_s, [0.1, 0.5, 2.0])
    assert schedule.duration_s == 2.0


def test_trace_csv_with_t_s_column(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("id,t_s\na,0.25\nb,1.5\n")
    np.testing.assert_array_equal(read_trace(path).arrivals_s, [0.25, 1.5])
    (tmp_path / "no.csv").write_text("id,time\na,1\n")
    with pytest.raises(PackratError, match="t_s or scheduled_s column"):
        read_trace(tmp_path / "no.csv")


@pytest.mark.parametrize(("text", "message"), [("1\nx\n", "not a number"), ("-1\n", ">= 0")])
def test_bad_traces_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(PackratError, match=message):
        read_trace(path)
    with pytest.raises(PackratError, match="cannot read"):
        read_trace(tmp_path / "missing.txt")
