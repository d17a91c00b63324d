"""The one wrapper around OS process and thread control: CPU affinity, parent death, signals.

Everything the pool does to a process through the kernel goes through this module, so tests can
replace it. Linux is the target; elsewhere the functions that have no portable equivalent are
no-ops (`die_with_parent`) or raise OSError (affinity).

Pinning works per *thread* on Linux: `sched_setaffinity(0, ...)` pins only the calling thread,
and threads inherit the mask of the thread that creates them. A worker therefore pins itself
before importing torch (so the OpenMP/MKL pools are born pinned) and again after the model is
initialized, to catch any thread created meanwhile by a thread it had not pinned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PROC = Path("/proc")

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that size the OpenMP/MKL pools; read once, when torch is imported."""


class ParentGoneError(OSError):
    """The process's parent is no longer the expected one (it died before we could watch it)."""


def thread_env(threads: int) -> dict[str, str]:
    """The environment settings that make OpenMP and MKL use `threads` threads."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return {name: str(threads) for name in THREAD_ENV_VARS}


def set_thread_env(threads: int) -> None:
    """Set `thread_env(threads)` in this process's environment; call before importing torch."""
    os.environ.update(thread_env(threads))


def pin_process(cpus: Iterable[int]) -> None:
    """Pin every thread of this process (the caller first) to `cpus`.

    Repeats over /proc/self/task until a pass finds no thread it had not pinned, so threads
    started by not-yet-pinned threads during the sweep are caught too. Threads that exit
    meanwhile are skipped. Raises OSError (EINVAL) if `cpus` holds no CPU this process may use.
    """
    cpu_set = set(cpus)
    if not cpu_set:
        raise ValueError("cannot pin to an empty set of CPUs")
    os.sched_setaffinity(0, cpu_set)
    pinned: set[int] = set()
    while True:
        todo = [tid for tid in _thread_ids(_PROC / "self" / "task") if tid not in pinned]
        if not todo:
            return
        for tid in todo:
            # A thread that exited since we listed it needs no pinning.
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, cpu_set)
            pinned.add(tid)


def current_affinity_of_all_threads() -> dict[int, frozenset[int]]:
    """CPU ids each thread of this process may run on, by thread id (from the kernel)."""
    result: dict[int, frozenset[int]] = {}
    for tid in _thread_ids(_PROC / "self" / "task"):
        with contextlib.suppress(ProcessLookupError):
            result[tid] = frozenset(os.sched_getaffinity(tid))
    return result


def affinity_of_process(pid: int) -> dict[int, frozenset[int]]:
    """CPU ids each thread of process `pid` may run on, by thread id, read from /proc.

    Works on any process this one may read (no cooperation from it needed); raises
    ProcessLookupError if the process does not exist.
    """
    task_dir = _PROC / str(pid) / "task"
    if not task_dir.is_dir():
        raise ProcessLookupError(f"no process {pid}")
    result: dict[int, frozenset[int]] = {}
    for tid in _thread_ids(task_dir):
        try:
            status = (task_dir / str(tid) / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                result[tid] = parse_cpu_list(line.split(":", 1)[1])
                break
    return result


def parse_cpu_list(text: str) -> frozenset[int]:
    """Parse the kernel's CPU list format ("0-3,8,10-11") into CPU ids."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return frozenset(cpus)


def die_with_parent(expected_parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; no-op elsewhere).

    The signal fires when the *thread* that created this process exits, so the parent must
    create workers from a thread that lives as long as they do (see `packrat.pool.process`).
    Raises ParentGoneError if the parent is already not `expected_parent_pid`: it died between
    spawning us and this call, and nobody would deliver the signal.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if os.getppid() != expected_parent_pid:
        raise ParentGoneError(
            f"parent {expected_parent_pid} is gone (parent is now {os.getppid()})"
        )


def ignore_interrupts() -> None:
    """Ignore SIGINT, so Ctrl-C in a terminal reaches the engine, which stops its workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_is_gone(pid: int) -> bool:
    """True if `pid` no longer exists or is a zombie (dead, only waiting to be reaped)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    # The state follows the parenthesized command name, which may itself hold ")".
    state = stat.rsplit(")", 1)[1].split()[0]
    return state in ("Z", "X")


def child_pids(pid: int) -> set[int]:
    """Pids of the live children of process `pid` (all its threads), read from /proc."""
    children: set[int] = set()
    for tid in _thread_ids(_PROC / str(pid) / "task"):
        try:
            text = (_PROC / str(pid) / "task" / str(tid) / "children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.update(int(c) for c in text.split())
    return {c for c in children if not process_is_gone(c)}


def _thread_ids(task_dir: Path) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(task_dir))
    except FileNotFoundError:
        return []
