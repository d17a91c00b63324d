"""Process-tree snapshots: descendants, RSS, fds, /dev/shm."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from packrat.bench.resources import (
    descendants,
    parent_pid,
    shared_memory_entries,
    snapshot,
    stat_fields,
)


def fake_proc(root: Path, tree: dict[int, tuple[int, str]]) -> Path:
    """A /proc with one `stat` per pid: {pid: (ppid, command name)}."""
    for pid, (ppid, name) in tree.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "stat").write_text(f"{pid} ({name}) S {ppid} 1 1 0 -1\n")
    (root / "self").mkdir()  # not a pid: skipped
    return root


def test_descendants_follow_the_whole_tree(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            10: (1, "server"),
            11: (10, "worker (a) b"),  # parentheses and spaces in the name
            12: (11, "grandchild"),
            13: (10, "worker"),
            20: (1, "someone else"),
            21: (20, "their child"),
        },
    )
    assert descendants(10, proc) == {11, 12, 13}
    assert descendants(12, proc) == set()
    assert parent_pid(11, proc) == 10 and parent_pid(99, proc) is None
    assert stat_fields(11, proc)[:2] == ["S", "10"] and stat_fields(99, proc) is None


def test_snapshot_counts_a_real_process_tree() -> None:
    sleeper = "import time; time.sleep(30)"
    spawn = f"subprocess.Popen([sys.executable, '-c', {sleeper!r}])"
    code = f"import subprocess, sys, time; {spawn}; {sleeper}"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while len(descendants(child.pid)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = snapshot(child.pid)
        assert child.pid in tree.pids and tree.processes == 2
        assert tree.rss_bytes > 1_000_000 and tree.fds >= 6  # two interpreters, stdio each
        # the two interpreters share their libraries: PSS counts those pages once
        assert 0 < tree.pss_bytes < tree.rss_bytes
        mine = snapshot(os.getpid())
        assert child.pid in mine.pids and tree.pids < mine.pids
        assert set(tree.to_json()) == {"processes", "rss_bytes", "pss_bytes", "fds"}
    finally:
        for pid in descendants(child.pid):
            os.kill(pid, 9)
        child.kill()
        child.wait()


def test_shared_memory_entries(tmp_path: Path) -> None:
    (tmp_path / "sem.mp-1").write_text("")
    assert shared_memory_entries(tmp_path) == {"sem.mp-1"}
    assert shared_memory_entries(tmp_path / "missing") == set()
