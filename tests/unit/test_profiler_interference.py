"""Measurements disturbed by other processes or the hypervisor: the share of the cores they
took, read from /proc counters (a fake /proc here), and the cell measured again."""

from __future__ import annotations

from pathlib import Path

import pytest

from packrat.profiler import interference
from packrat.profiler.interference import BUSY_SHARE, MEASURE_TRIES, CoreUse, least_disturbed


def _write_proc(
    proc: Path, cores: dict[int, tuple[int, int, int]], processes: dict[int, int]
) -> None:
    """cores: cpu -> (busy, idle, steal) ticks; processes: pid -> utime + stime ticks."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    for cpu, (busy, idle, steal) in sorted(cores.items()):
        lines.append(f"cpu{cpu} {busy} 0 0 {idle} 0 0 0 {steal} 0 0")
    lines.append("intr 12345")
    (proc / "stat").write_text("\n".join(lines) + "\n")
    for pid, ticks in processes.items():
        (proc / str(pid)).mkdir(exist_ok=True)
        fields = ["S"] + ["0"] * 10 + [str(ticks), "0"] + ["0"] * 30
        (proc / str(pid) / "stat").write_text(f"{pid} (python (worker)) " + " ".join(fields))


def test_the_share_is_what_others_used_or_the_hypervisor_stole(tmp_path: Path) -> None:
    _write_proc(tmp_path, {0: (0, 0, 0), 1: (0, 0, 0), 2: (500, 0, 0)}, {7: 0})
    use = CoreUse.begin({0, 1}, [7], proc=tmp_path)
    assert use is not None
    # 200 ticks on each of cores 0 and 1: 300 busy, of which the worker's 240; 20 stolen.
    # Core 2 (not measured) was busy throughout and does not count.
    _write_proc(tmp_path, {0: (200, 0, 0), 1: (100, 80, 20), 2: (900, 0, 0)}, {7: 240})
    assert use.others() == pytest.approx((300 - 240 + 20) / 400)


def test_an_undisturbed_measurement_reads_zero_even_with_rounding(tmp_path: Path) -> None:
    _write_proc(tmp_path, {0: (0, 0, 0)}, {7: 0})
    use = CoreUse.begin({0}, [7], proc=tmp_path)
    assert use is not None
    _write_proc(tmp_path, {0: (100, 0, 0)}, {7: 102})  # the process' ticks round up
    assert use.others() == 0.0


def test_too_short_or_unreadable_is_unknown(tmp_path: Path) -> None:
    _write_proc(tmp_path, {0: (0, 0, 0)}, {7: 0})
    use = CoreUse.begin({0}, [7], proc=tmp_path)
    assert use is not None
    _write_proc(tmp_path, {0: (10, 10, 0)}, {7: 0})
    assert use.others() is None  # 20 ticks: too short to tell
    (tmp_path / "stat").write_text("cpu0 not numbers\n")
    assert use.others() is None
    assert CoreUse.begin({0}, [7], proc=tmp_path / "missing") is None


def test_a_process_that_exited_counts_nothing(tmp_path: Path) -> None:
    _write_proc(tmp_path, {0: (0, 0, 0)}, {7: 0})
    use = CoreUse.begin({0}, [7, 8], proc=tmp_path)
    assert use is not None
    _write_proc(tmp_path, {0: (100, 0, 0)}, {7: 50})
    assert use.others() == pytest.approx(0.5)


class _Scripted:
    """A CoreUse whose measurements report the shares given, in turn."""

    def __init__(self, shares: list[float | None]) -> None:
        self.shares = shares

    def begin(self, cpus: object, pids: object) -> _Scripted:
        return self

    def others(self) -> float | None:
        return self.shares.pop(0)


@pytest.mark.parametrize(
    ("shares", "tries", "kept"),
    [
        ([0.0], 1, 0),
        ([None], 1, 0),
        ([0.5, 0.05], 2, 1),
        ([0.5, 0.2, 0.4], MEASURE_TRIES, 1),  # never quiet: the least disturbed is kept
    ],
)
def test_a_disturbed_measurement_is_taken_again(
    monkeypatch: pytest.MonkeyPatch, shares: list[float | None], tries: int, kept: int
) -> None:
    assert shares[-1] is None or shares[-1] <= BUSY_SHARE or len(shares) == MEASURE_TRIES
    expected_share = shares[kept]
    monkeypatch.setattr(interference, "CoreUse", _Scripted(list(shares)))
    runs: list[int] = []

    def measure() -> int:
        runs.append(len(runs))
        return len(runs) - 1

    result, share = least_disturbed(measure, {0}, [1])
    assert len(runs) == tries
    assert (result, share) == (kept, expected_share)
