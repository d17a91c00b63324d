"""Workers never outlive the engine's process, even when it is SIGKILLed mid-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from packrat.pool.affinity import process_is_gone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PARENT_SCRIPT = ROOT / "tests" / "fixtures" / "pool_orphan_parent.py"


def test_workers_die_with_a_sigkilled_parent(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "tests" / "fixtures"), env.get("PYTHONPATH", "")]
    )
    parent = subprocess.Popen(
        [sys.executable, str(PARENT_SCRIPT), str(tmp_path / "weights")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, f"parent exited early with {parent.wait()}"
        pids = json.loads(line)
        assert len(pids) == 2
        assert not any(process_is_gone(pid) for pid in pids)
        time.sleep(0.5)  # let both workers enter their minute-long batch
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not all(process_is_gone(p) for p in pids):
            time.sleep(0.05)
        assert all(process_is_gone(p) for p in pids), f"orphaned workers: {pids}"
    finally:
        parent.kill()
        parent.wait()
