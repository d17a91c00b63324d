"""How much of a measurement's cores something else took: other processes, or the hypervisor.

A cell timed while another process computes on one of its cores, or while the hypervisor
runs another guest on it (steal), comes out slow, and the plans made from it avoid that
instance shape for as long as the profile is cached. Multi-thread cells suffer most: each
operator waits for its slowest thread. Seen on the 2-core AMD machine: a cached profile's
two-thread cells of bert-base were 1.4-1.6x slower than the same kernels ran an hour later
(229 and 386 ms at batches 1 and 2, against 145 and 275), its one-thread cells were not.

`CoreUse.start(cpus, pids)` reads the cores' time counters (/proc/stat) and the processes'
CPU time (/proc/PID/stat, every thread); `others()` after the measurement is the share of the
cores' time that was busy but not in those processes, plus the time stolen from them. Linux
only; None where the counters cannot be read or the measurement was too short to tell.
`least_disturbed` measures a cell again while that share is over `BUSY_SHARE`; the sweep
keeps the least disturbed try and warns if none was quiet. Checked with ResNet-50 on torch,
two threads, batch 8: 537 ms with others at 0.3% of the cores; 1752 ms (three tries) at 39%
with a busy loop pinned to one of the two cores; 492 ms at 0.3% once it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

PROC = Path("/proc")

BUSY_SHARE = 0.10
"""A measurement during which something else took more than this share of its cores' time
is taken again."""

MEASURE_TRIES = 3
"""Measurements of one cell in all, at most, before the least disturbed one is kept."""

T = TypeVar("T")

MIN_TICKS = 50
"""The least core time (clock ticks, 10 ms each at the usual 100 Hz) a share is computed
over: the counters tick per core, so a shorter measurement's share is mostly rounding."""


@dataclass(frozen=True)
class _Times:
    busy: int  # user, nice, system, irq, softirq ticks on the cores
    steal: int
    total: int
    ours: int  # the processes' user + system ticks


@dataclass(frozen=True)
class CoreUse:
    """The counters of `cpus` and `pids` at the start of a measurement."""

    cpus: frozenset[int]
    pids: tuple[int, ...]
    start: _Times
    proc: Path = PROC

    @classmethod
    def begin(cls, cpus: Collection[int], pids: Iterable[int], proc: Path = PROC) -> CoreUse | None:
        """Read the counters now; None where they cannot be read."""
        times = _read(frozenset(cpus), tuple(pids), proc)
        if times is None:
            return None
        return cls(frozenset(cpus), tuple(pids), times, proc)

    def others(self) -> float | None:
        """The share (0-1) of the cores' time since `begin` that other processes used or the
        hypervisor stole; None if unreadable now or too short a time to tell."""
        end = _read(self.cpus, self.pids, self.proc)
        if end is None:
            return None
        total = end.total - self.start.total
        if total < MIN_TICKS:
            return None
        foreign = max(0, (end.busy - self.start.busy) - (end.ours - self.start.ours))
        return min(1.0, (foreign + end.steal - self.start.steal) / total)


def least_disturbed(
    measure: Callable[[], T], cpus: Collection[int], pids: Iterable[int]
) -> tuple[T, float | None]:
    """`measure()`'s result, and the share of `cpus`' time something besides `pids` took
    meanwhile; measured again while that share is over `BUSY_SHARE`, up to `MEASURE_TRIES`
    times in all, keeping the least disturbed."""
    pids = tuple(pids)
    kept: tuple[T, float | None] | None = None
    for _ in range(MEASURE_TRIES):
        use = CoreUse.begin(cpus, pids)
        result = measure()
        others = None if use is None else use.others()
        if kept is None or (others is not None and (kept[1] is None or others < kept[1])):
            kept = (result, others)
        if others is None or others <= BUSY_SHARE:
            break
    assert kept is not None
    return kept


def _read(cpus: frozenset[int], pids: tuple[int, ...], proc: Path) -> _Times | None:
    busy = steal = total = 0
    try:
        lines = (proc / "stat").read_text().splitlines()
        for line in lines:
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            user, nice, system, idle, iowait, irq, softirq, stolen = map(int, values[:8])
            busy += user + nice + system + irq + softirq
            steal += stolen
            total += user + nice + system + idle + iowait + irq + softirq + stolen
        ours = sum(_process_ticks(proc / str(pid) / "stat") for pid in pids)
    except (OSError, ValueError):
        return None
    return _Times(busy, steal, total, ours)


def _process_ticks(stat: Path) -> int:
    """utime + stime of a process (all its threads), in clock ticks; 0 if it has exited."""
    try:
        text = stat.read_text()
    except FileNotFoundError:
        return 0
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
