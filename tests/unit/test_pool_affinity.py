"""The OS wrapper: CPU lists, thread environment, pinning, parent death, /proc readers.

Calls that change process-wide state (pinning, the parent-death signal) run in a throwaway
child interpreter, never in the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from packrat.pool import affinity


def _run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", {0}), ("0-3", {0, 1, 2, 3}), ("0-1,4,6-7\n", {0, 1, 4, 6, 7}), ("", set())],
)
def test_parse_cpu_list(text: str, cpus: set[int]) -> None:
    assert affinity.parse_cpu_list(text) == cpus


def test_thread_env_sets_openmp_and_mkl() -> None:
    assert affinity.thread_env(3) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
    with pytest.raises(ValueError):
        affinity.thread_env(0)


def test_set_thread_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in affinity.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    affinity.set_thread_env(2)
    assert os.environ["OMP_NUM_THREADS"] == "2"
    assert os.environ["MKL_NUM_THREADS"] == "2"


def test_affinity_readers_agree_on_this_process() -> None:
    from_kernel = affinity.current_affinity_of_all_threads()
    from_proc = affinity.affinity_of_process(os.getpid())
    assert os.getpid() in from_kernel  # the main thread's tid is the pid
    assert from_kernel == from_proc
    allowed = os.sched_getaffinity(0)
    assert all(cpus <= allowed for cpus in from_kernel.values())


def test_affinity_of_a_missing_process() -> None:
    with pytest.raises(ProcessLookupError):
        affinity.affinity_of_process(2**22 + 12345)


def test_pin_process_pins_threads_started_before_it() -> None:
    out = _run_python(
        """
        import json, os, threading
        from packrat.pool import affinity
        stop = threading.Event()
        threads = [threading.Thread(target=stop.wait) for _ in range(3)]
        for t in threads:
            t.start()
        target = max(os.sched_getaffinity(0))
        affinity.pin_process([target])
        result = affinity.current_affinity_of_all_threads()
        stop.set()
        print(json.dumps({"target": target, "cpus": [sorted(c) for c in result.values()]}))
        """
    )
    report = json.loads(out)
    assert len(report["cpus"]) >= 4
    assert all(cpus == [report["target"]] for cpus in report["cpus"])


def test_pin_process_rejects_empty_set() -> None:
    with pytest.raises(ValueError):
        affinity.pin_process([])


def test_die_with_parent_accepts_the_real_parent_and_rejects_another() -> None:
    out = _run_python(
        """
        import os
        from packrat.pool import affinity
        affinity.die_with_parent(os.getppid())
        try:
            affinity.die_with_parent(os.getppid() + 1)
        except affinity.ParentGoneError as exc:
            print("gone:", exc)
        """
    )
    assert out.startswith("gone:")


def test_process_is_gone_and_child_pids() -> None:
    assert not affinity.process_is_gone(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in affinity.child_pids(os.getpid())
        assert not affinity.process_is_gone(child.pid)
        child.kill()
        child.wait()
        assert affinity.process_is_gone(child.pid)
        assert child.pid not in affinity.child_pids(os.getpid())
    finally:
        child.kill()
        child.wait()
