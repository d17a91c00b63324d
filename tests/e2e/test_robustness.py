"""Short versions of the flood and the soak (benchmarks/robustness.py): a real server under
more load than it can take, and under load while its plan is changed again and again."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import httpx
import pytest

from packrat.bench.loadgen import LoadOptions, LoadResult, Payload, Target, poisson, run_load
from packrat.bench.resources import Resources, shared_memory_entries, snapshot
from packrat.pool.affinity import process_is_gone

from .server import RunningServer, packrat_serve

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HANDLER = str(FIXTURES / "server_marker_handler.py")
MODEL = "server_marker_handler"
SLOW_10MS = Payload(b"1010", "application/json")  # the marker handler's 10 ms request
SLOW_100MS = Payload(b"1100", "application/json")


def settled(server: RunningServer, baseline: Resources, timeout_s: float = 10.0) -> Resources:
    """The server's tree once its open files are back to `baseline` (client connections close
    a moment after the load ends), or as it is after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = snapshot(server.process.pid)
        if now.fds <= baseline.fds or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def test_a_flood_is_refused_at_once_and_the_server_recovers(tmp_path: Path) -> None:
    """Several times what one instance can serve: every request is answered, 200 or 503 (the
    queue is bounded), and the server serves normally right after."""
    args = ("--plan", "<1,1,4>", "--max-batch-size", "4", "--max-queue", "8")
    with packrat_serve(HANDLER, *args, workdir=tmp_path) as server:
        url = server.inference + f"/predictions/{MODEL}"
        assert httpx.post(url, json=1.0).json() == 2.0
        before = snapshot(server.process.pid)
        # ~103 ms per batch of 4 on one instance: about 40 requests/s at best, a tenth of the
        # rate sent (one that a client on a slow, shared machine can still send: at 900/s
        # against a 10 ms handler, CI's client fell behind and the queue never filled).
        result = run_load(
            Target(server.inference, MODEL), poisson(400.0, 3.0, seed=5), LoadOptions(SLOW_100MS)
        )
        kinds = collections.Counter(r.status for r in result.records)
        assert set(kinds) == {200, 503}, kinds  # nothing timed out, nothing else failed
        refused = [r for r in result.records if r.status == 503]
        assert all("queue is full" in r.detail or "overloaded" in r.detail for r in refused)
        assert [httpx.post(url, json=float(k)).json() for k in range(5)] == [0, 2, 4, 6, 8]
        after = settled(server, before)
        assert after.processes == before.processes and after.fds <= before.fds
        assert server.stop() == 0, server.output


def test_a_short_soak_with_forced_switches_fails_nothing_and_leaks_nothing(
    tmp_path: Path,
) -> None:
    """Load for 12 s while the plan is pinned, changed and released every 2 s: every request
    answered, every change made, and no process, open file or shared-memory entry left."""
    shm_before = shared_memory_entries()
    # --no-calibrate: the switches counted below are the profile's plans. Its requests take
    # 10 ms more than the example requests it is profiled on (SLOW_10MS), so served batches
    # would correct its cells and move the plans (CI saw the release to auto move one).
    args = ("--max-batch-size", "4", "--no-calibrate")
    with packrat_serve(HANDLER, *args, workdir=tmp_path) as server:
        url = server.inference + f"/predictions/{MODEL}"
        assert httpx.post(url, json=1.0).json() == 2.0
        before = snapshot(server.process.pid)
        outcome: list[LoadResult] = []
        load = threading.Thread(
            target=lambda: outcome.append(
                run_load(
                    Target(server.inference, MODEL),
                    poisson(60.0, 12.0, seed=7),
                    LoadOptions(SLOW_10MS),
                )
            )
        )
        load.start()
        changes = [{"plan": "fat"}, {"plan": "<2,1,2>"}, {"policy": "auto"}] * 2
        for change in changes:
            time.sleep(2.0)
            reply = httpx.put(server.management + f"/models/{MODEL}/plan", json=change)
            assert reply.status_code == 200, reply.text
        load.join()
        (result,) = outcome
        failed = [r for r in result.records if not r.ok]
        assert not failed, failed[:3]
        assert len(result.records) > 500
        switches = httpx.get(server.management + f"/models/{MODEL}/switches").json()
        # fat, then <2,1,2> (the auto plan for 4 too: releasing it moves nothing), twice.
        assert [s["reason"] for s in switches].count("pinned") >= 4
        (described,) = httpx.get(server.management + f"/models/{MODEL}").json()
        assert described["policy"] == "auto"
        after = settled(server, before)
        assert after.processes == before.processes and after.fds <= before.fds
        pids = after.pids
        assert server.stop() == 0, server.output
    # The workers are reaped before the server exits; helpers that are not its to join
    # (multiprocessing's resource tracker) exit a moment after it, on their own.
    deadline = time.monotonic() + 10.0
    while not all(process_is_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in pids if not process_is_gone(pid)] == []
    assert shared_memory_entries() <= shm_before
