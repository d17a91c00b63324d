"""What benchmarks/robustness.py measures besides the load's own results: the server's
process tree sampled in a thread (processes, RSS, PSS, open files), its capacity, and how long
latency takes to recover after a flood."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

from packrat.bench.loadgen import ClosedLoop, LoadOptions, LoadResult, Payload, Target, run_load
from packrat.bench.resources import parent_pid, snapshot

from harness.client import describe

RECOVERY_FACTOR = 1.5  # latency is "back" once a 2 s window's p50 is within this of before


@dataclass(frozen=True)
class Sample:
    """The server's process tree at `at_s` seconds into the load."""

    at_s: float
    processes: int
    rss_bytes: int
    pss_bytes: int
    fds: int


class Sampler:
    """Snapshots of a process tree every `period_s` seconds, in a thread, until stopped."""

    def __init__(self, pid: int, period_s: float = 1.0) -> None:
        self.samples: list[Sample] = []
        self._pid, self._period_s = pid, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = snapshot(self._pid)
            at_s = time.monotonic() - self._start
            self.samples.append(
                Sample(at_s, tree.processes, tree.rss_bytes, tree.pss_bytes, tree.fds)
            )
            self._stop.wait(self._period_s)


def server_pid(urls: dict[str, str], model: str) -> int:
    """The server process: the parent of its first instance."""
    pid = parent_pid(int(describe(urls, model)["instances"][0]["pid"]))
    if pid is None:
        raise SystemExit("cannot find the server process")
    return pid


def capacity_rps(target: Target, payload: Payload, clients: int, seconds: float) -> float:
    """Answers per second of a closed loop of `clients` for about `seconds`."""
    result = run_load(target, ClosedLoop(clients, duration_s=seconds), LoadOptions(payload))
    summary = result.summary().overall
    if summary.failures:
        raise SystemExit(f"capacity probe failed: {summary.failures}")
    return summary.throughput_rps


def minute_medians(samples: list[Sample]) -> tuple[float, float]:
    """Median PSS of the samples in the first and in the last 60 s."""
    end_s = samples[-1].at_s
    first = [s.pss_bytes for s in samples if s.at_s <= samples[0].at_s + 60.0]
    last = [s.pss_bytes for s in samples if s.at_s >= end_s - 60.0]
    return statistics.median(first), statistics.median(last)


def recovery_s(result: LoadResult, flood_end_s: float, baseline_p50_ms: float) -> float | None:
    """Seconds after the flood's end until a 2 s window of answered requests has its p50
    within RECOVERY_FACTOR of `baseline_p50_ms`; None if it never does."""
    done = sorted(
        (r.scheduled_s, r.latency_ms)
        for r in result.records
        if r.ok and r.latency_ms is not None and r.scheduled_s >= flood_end_s
    )
    start, end_s = flood_end_s, result.phases[-1].end_s
    while start < end_s:
        window = sorted(lat for at, lat in done if start <= at < start + 2.0)
        if window and window[len(window) // 2] <= RECOVERY_FACTOR * baseline_p50_ms:
            return start - flood_end_s
        start += 0.5
    return None
