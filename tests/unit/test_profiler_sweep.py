"""The sweep's loop with a fake engine timing cells from a table: which cells it measures,
with how many worker sets, what it saves, how far its progress bar goes, how it resumes."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from packrat.errors import ProfileError
from packrat.models.base import ModelIdentity
from packrat.profiler.profile_file import load_profile
from packrat.profiler.prune import PruneConfig, replay_sweep
from packrat.profiler.sweep import EveryCell, SweepConfig, profile_model
from packrat.stats import SamplingPolicy
from packrat.topology import synthetic_topology
from packrat.types import Plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from recording_progress import RecordingProgress  # noqa: E402

CORES = 8
GRID = (1, 2, 4, 8, 16)
# Amdahl's law with a serial share of 30%: many small instances beat few wide ones at large
# batches, so the wide cells of large batches are never in an optimal plan.
TABLE = {(t, b): 10.0 * b * (0.3 + 0.7 / t) + 0.5 * t for t in range(1, CORES + 1) for b in GRID}
POLICY = SamplingPolicy(warmup_runs=0, min_runs=2, max_runs=2)
SLOW = 1.5


class FakeSource:
    def identity(self) -> ModelIdentity:
        return ModelIdentity("fake", "sha256:" + "0" * 64)


class FakeEngine:
    """Times every run of a cell at exactly its table latency; counts the engines made. The
    engines whose start index is in `slow` run `SLOW` times slower (the machine drifting)."""

    started: list[int] = []
    slow: range = range(0)
    drift = 0.0  # each engine started runs this much slower than the one before

    measured = 0

    def __init__(self, source: Any, plan: Plan, config: Any) -> None:
        self.plan = plan
        self.factor = 1.0
        self.pool_pids: list[int] = []

    def start(self) -> None:
        if len(FakeEngine.started) in FakeEngine.slow:
            self.factor = SLOW
        self.factor *= 1.0 + FakeEngine.drift * len(FakeEngine.started)
        FakeEngine.started.append(self.plan.instances[0].threads)

    def close(self) -> None:
        pass

    def measure(self, instance: int, batch: int, policy: SamplingPolicy) -> list[float]:
        FakeEngine.measured += 1
        return [TABLE[(self.plan.instances[0].threads, batch)] * self.factor] * policy.min_runs


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    import packrat.pool.engine

    FakeEngine.started, FakeEngine.slow, FakeEngine.measured = [], range(0), 0
    FakeEngine.drift = 0.0
    monkeypatch.setattr(packrat.pool.engine, "Engine", FakeEngine)


def sweep(config: SweepConfig, out: Path, progress: RecordingProgress | None = None) -> set[Any]:
    existing = load_profile(out) if out.exists() else None
    profile = profile_model(
        FakeSource(),  # type: ignore[arg-type]
        config,
        out=out,
        existing=existing,
        topology=synthetic_topology(1, CORES),
        progress=progress,
    )
    return set(profile.cells)


def test_a_pruned_sweep_measures_what_the_planner_asks_once_per_thread_count(
    tmp_path: Path,
) -> None:
    asked = tuple(range(1, 17))
    config = SweepConfig(CORES, GRID, POLICY, asked=asked)
    progress = RecordingProgress()
    measured = sweep(config, tmp_path / "p.json", progress)
    replay = replay_sweep(
        PruneConfig(cores=CORES, batches=GRID, asked=asked, interpolate=True), TABLE
    )
    assert measured == set(replay.measured)
    assert len(measured) < len(config.cells)  # it did skip cells
    assert FakeEngine.started == sorted({t for t, _ in measured})  # one worker set per t
    assert progress.done == pytest.approx(progress.total)  # skipped cells count as done
    assert any("skipped" in line for line in progress.lines)
    saved = load_profile(tmp_path / "p.json")
    assert saved.sampling["pruned_for"] == "1..16, interpolated"
    assert set(saved.cells) == measured

    FakeEngine.started = []
    assert sweep(config, tmp_path / "p.json") == measured  # resumed: the same skips
    assert FakeEngine.started == [] and not config.needs_measuring(saved)


def test_without_asked_batch_sizes_every_cell_is_measured(tmp_path: Path) -> None:
    config = SweepConfig(CORES, GRID, POLICY)
    assert sweep(config, tmp_path / "p.json") == set(config.cells)
    assert FakeEngine.started == list(range(1, CORES + 1))
    assert "pruned_for" not in load_profile(tmp_path / "p.json").sampling


def test_passes_sweep_the_grid_again_and_a_slow_pass_does_not_move_a_cell(
    tmp_path: Path,
) -> None:
    config = SweepConfig(CORES, GRID, POLICY, passes=3)
    # The rows go up, down, up: a pass starts on the worker set the last one ended on.
    rows = [*range(1, CORES + 1), *range(CORES - 1, 0, -1), *range(2, CORES + 1)]
    FakeEngine.slow = range(CORES, 2 * CORES - 2)  # slow through the middle of the second pass
    progress = RecordingProgress()
    sweep(config, tmp_path / "p.json", progress)
    saved = load_profile(tmp_path / "p.json")
    assert set(saved.cells) == set(config.cells) and saved.sampling["passes"] == 3
    for (threads, batch), stats in saved.cells.items():
        second = TABLE[threads, batch] * (SLOW if 1 < threads < CORES else 1.0)
        assert [p.mean_ms for p in stats.passes] == [TABLE[threads, batch], second,
                                                     TABLE[threads, batch]]  # fmt: skip
        assert stats.mean_ms == TABLE[threads, batch]
    assert FakeEngine.started == rows  # a worker set per thread count and pass
    assert progress.done == pytest.approx(progress.total)
    assert any("pass 3 of 3" in line for line in progress.lines)

    FakeEngine.started = []
    assert not config.needs_measuring(saved)
    assert replace(config, passes=4).needs_measuring(saved)  # a pass short
    sweep(replace(config, passes=4), tmp_path / "p.json")  # resumed: one more pass each
    assert FakeEngine.started == list(range(CORES, 0, -1))  # the fourth pass goes down
    assert all(s.pass_count == 4 for s in load_profile(tmp_path / "p.json").cells.values())


def test_two_passes_in_opposite_orders_weigh_a_steady_drift_on_every_row_alike(
    tmp_path: Path,
) -> None:
    FakeEngine.drift = 0.05  # the machine slows by 5% with each worker set started
    one_pass = SweepConfig(CORES, GRID, POLICY)
    sweep(one_pass, tmp_path / "one.json")
    FakeEngine.started = []
    sweep(replace(one_pass, passes=2), tmp_path / "two.json")
    for name, spread in (("one.json", 1.0 + 0.05 * (CORES - 1)), ("two.json", 1.0)):
        cells = load_profile(tmp_path / name).cells
        slowdown = {t: cells[t, b].mean_ms / TABLE[t, b] for t, b in cells}
        # One pass: the last row reads 35% slower than the first, by the drift alone; two
        # passes, up then down: every row by the same factor, as the machine's mean speed.
        assert max(slowdown.values()) / min(slowdown.values()) == pytest.approx(spread)


def test_later_passes_stay_within_the_sweeps_own_cells(tmp_path: Path) -> None:
    sweep(SweepConfig(CORES, GRID, POLICY), tmp_path / "p.json")
    FakeEngine.started = []
    fewer = SweepConfig(4, GRID, POLICY, passes=2)  # fewer cores now
    sweep(fewer, tmp_path / "p.json")
    assert FakeEngine.started == [4, 3, 2, 1]  # a second pass goes down the rows
    saved = load_profile(tmp_path / "p.json")
    assert not fewer.needs_measuring(saved)  # the cells of more threads keep their one pass
    cells = saved.cells
    assert {c for c, s in cells.items() if s.pass_count == 2} == {
        (t, b) for t in range(1, 5) for b in GRID
    }


def test_a_pruned_sweep_in_passes_keeps_the_cells_of_the_optimal_plans(tmp_path: Path) -> None:
    asked = tuple(range(1, 17))
    config = SweepConfig(CORES, GRID, POLICY, asked=asked, passes=3)
    FakeEngine.slow = range(0, 3)  # the first pass's first worker sets run slow
    progress = RecordingProgress()
    measured = sweep(config, tmp_path / "p.json", progress)
    replay = replay_sweep(
        PruneConfig(cores=CORES, batches=GRID, asked=asked, interpolate=True), TABLE
    )
    saved = load_profile(tmp_path / "p.json")
    assert set(replay.measured) <= measured
    assert all(s.pass_count == 3 for s in saved.cells.values())
    assert all(s.mean_ms == TABLE[cell] for cell, s in saved.cells.items())
    assert not config.needs_measuring(saved)
    assert progress.done == pytest.approx(progress.total)


def test_a_sweep_row_by_row_measures_what_one_sweep_does_one_thread_count_at_a_time(
    tmp_path: Path,
) -> None:
    """As serve profiles contenders side by side: each pass, one row (thread count) per
    sweep, the file resumed from one to the next."""
    whole = SweepConfig(CORES, GRID, POLICY, asked=tuple(range(1, 17)), passes=2)
    expected = sweep(whole, tmp_path / "whole.json")
    FakeEngine.started = []
    for passes in (1, 2):
        for rows in range(1, CORES + 1):
            before, progress = len(FakeEngine.started), RecordingProgress()
            sweep(replace(whole, passes=passes, rows=rows), tmp_path / "rows.json", progress)
            assert set(FakeEngine.started[before:]) <= {rows}  # its own row, or none: pruned
            assert progress.done <= progress.total + 1e-9  # skips of later rows not counted
    saved = load_profile(tmp_path / "rows.json")
    assert set(saved.cells) == expected and not whole.needs_measuring(saved)
    assert all(s.pass_count == 2 for s in saved.cells.values())
    assert len(FakeEngine.started) == 2 * len({t for t, _ in expected})
    with pytest.raises(ProfileError, match="rows must be 1..8"):
        SweepConfig(CORES, GRID, rows=CORES + 1)


def test_every_cell_goes_thread_by_thread_past_the_measured_ones() -> None:
    cells = SweepConfig(2, (1, 2)).cells
    order = EveryCell(cells, {(1, 2): 5.0})
    seen = []
    while (cell := order.next_cell()) is not None:
        seen.append(cell)
        order.record(*cell, 1.0)
    assert seen == [(1, 1), (2, 1), (2, 2)]


class Busy:
    """Every measurement's cores were 30% taken by something else."""

    @classmethod
    def begin(cls, cpus: object, pids: object) -> Busy:
        return cls()

    def others(self) -> float:
        return 0.3


def test_a_cell_measured_while_its_cores_were_busy_is_measured_again_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from packrat.profiler import interference

    monkeypatch.setattr(interference, "CoreUse", Busy)
    progress = RecordingProgress()
    config = SweepConfig(2, (1, 2), POLICY)
    with caplog.at_level("WARNING", logger="packrat.profiler.sweep"):
        cells = sweep(config, tmp_path / "busy.json", progress)
    assert FakeEngine.measured == len(cells) * interference.MEASURE_TRIES
    assert "t=1 b=1 was measured 3 times while other processes" in caplog.text
    assert all("30% of its cores taken by others" in line for line in progress.lines)
