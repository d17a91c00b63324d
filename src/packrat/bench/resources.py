"""What a server process tree holds: processes, memory, open files, shared memory.

`snapshot(pid)` reads /proc for the process and all its descendants (the worker processes of
`packrat serve`); `shared_memory_entries()` lists /dev/shm. Taken before and after a flood or a
soak, they show whether anything leaked. Linux only; no torch import.

Memory is reported twice. The sum of RSS counts a shared page once per process that touched
it: the workers map the model's weights from one shared file, so a worker that runs its first
batch adds the whole weights to the RSS sum (about 400 MiB for BERT-base) without using a byte
more. The sum of PSS counts each page once across the tree, which is what the tree really uses;
growth is judged on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from packrat.pool.memory import parse_smaps_rollup

PROC = Path("/proc")
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Resources:
    """A process tree at one moment: its pids, their summed RSS and PSS (bytes), open fds."""

    pids: frozenset[int]
    rss_bytes: int
    pss_bytes: int
    fds: int

    @property
    def processes(self) -> int:
        return len(self.pids)

    def to_json(self) -> dict[str, int]:
        return {
            "processes": self.processes,
            "rss_bytes": self.rss_bytes,
            "pss_bytes": self.pss_bytes,
            "fds": self.fds,
        }


def descendants(pid: int, proc: Path = PROC) -> set[int]:
    """Every live descendant of `pid` (children, their children, ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        ppid = _ppid(entry)
        if ppid is not None:
            parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def parent_pid(pid: int, proc: Path = PROC) -> int | None:
    """The parent of `pid`, None if `pid` is gone."""
    return _ppid(proc / str(pid))


def snapshot(pid: int, proc: Path = PROC) -> Resources:
    """`pid` and its descendants: how many, their RSS, PSS and open fds (processes that exit
    while being read are left out)."""
    pids = {pid, *descendants(pid, proc)}
    alive: set[int] = set()
    rss = pss = fds = 0
    for p in pids:
        try:
            memory = parse_smaps_rollup((proc / str(p) / "smaps_rollup").read_text())
            fds += len(os.listdir(proc / str(p) / "fd"))
        except (FileNotFoundError, ProcessLookupError):
            continue
        rss += memory.get("Rss", 0)  # a zombie maps nothing
        pss += memory.get("Pss", 0)
        alive.add(p)
    return Resources(frozenset(alive), rss, pss, fds)


def shared_memory_entries(shm: Path = SHM) -> set[str]:
    """Names in /dev/shm (POSIX shared memory and semaphores); empty if there is none."""
    try:
        return set(os.listdir(shm))
    except FileNotFoundError:
        return set()


def stat_fields(pid: int | str, proc: Path = PROC) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ... starttime at
    index 19), or None if the process is gone. The name may hold spaces and parentheses, so
    the fields follow the last ")"."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat[stat.rfind(")") + 2 :].split()


def _ppid(entry: Path) -> int | None:
    fields = stat_fields(entry.name, entry.parent)
    return int(fields[1]) if fields is not None and len(fields) > 1 else None
