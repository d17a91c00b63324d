"""`packrat serve` in a container whose CPU quota is smaller than the cores it may run on:
it plans for the whole cores the quota pays for and says so at start-up."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from .server import packrat_serve

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_quota_of_one_and_a_half_cpus_serves_on_one_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs to show the quota cutting them to 1")
    fake = tmp_path / "cgroup-root"
    (fake / "proc/self").mkdir(parents=True)
    (fake / "proc/self/cgroup").write_text("0::/\n")
    (fake / "proc/self/mountinfo").write_text(
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
    )
    (fake / "sys/fs/cgroup").mkdir(parents=True)
    (fake / "sys/fs/cgroup/cpu.max").write_text("150000 100000\n")
    monkeypatch.setenv("PACKRAT_CGROUP_ROOT", str(fake))
    handler = str(FIXTURES / "server_marker_handler.py")
    with packrat_serve(handler, "--max-batch-size", "2", workdir=tmp_path) as running:
        assert "its CPU quota is 1.5 CPUs" in running.output, running.output
        assert "planning for 1 core of the" in running.output
        (described,) = httpx.get(running.management + "/models/server_marker_handler").json()
        cores = {cpu for instance in described["instances"] for cpu in instance["cores"]}
        assert len(cores) == 1, described
        answer = httpx.post(running.inference + "/predictions/server_marker_handler", json=2.5)
        assert answer.status_code == 200 and answer.json() == 5.0
