"""How benchmarks/serve_overhead.py times a step: percentiles of repeated calls, back to back
or after an idle gap like a worker's between two sequential requests."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

WARMUP_REQUESTS = 20
IDLE_GAP_S = 0.002  # about the time a worker idles between two sequential requests


@dataclass(frozen=True)
class Latency:
    """Percentiles and mean of a set of samples, in milliseconds."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    count: int

    @classmethod
    def of(cls, samples_ms: list[float]) -> Latency:
        q = np.percentile(samples_ms, [50, 90, 99])
        mean_ms = statistics.fmean(samples_ms)
        return cls(float(q[0]), float(q[1]), float(q[2]), mean_ms, len(samples_ms))


def timed_ms(fn: Any, repeats: int, warmup: int = 5) -> Latency:
    """Latency of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000.0)
    return Latency.of(samples)


def timed_after_idle(fn: Any, repeats: int, idle_s: float) -> Latency:
    """Latency of `fn()` when each call follows `idle_s` of sleep, as in a server at low load:
    torch's OpenMP threads have gone to sleep and must be woken by the next call."""
    samples = []
    for _ in range(repeats):
        time.sleep(idle_s)
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000.0)
    return Latency.of(samples)
