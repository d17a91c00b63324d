"""How the latency of a run's successful requests is summarized, by the load generator and the
simulator alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Latency of successful requests, ms (numpy's default linear-interpolated percentiles)."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @staticmethod
    def of(latencies_ms: list[float]) -> LatencyStats | None:
        if not latencies_ms:
            return None
        a = np.asarray(latencies_ms, dtype=np.float64)
        p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
        return LatencyStats(a.size, float(a.mean()), p50, p90, p99, float(a.max()))
