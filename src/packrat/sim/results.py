"""What a simulation found: every request's fate, and its summary overall and per phase.

Latency counts from a request's arrival to the end of its batch (the load generator's
latency from the scheduled send time, without the network). Percentiles are numpy's linear
ones, as `packrat loadgen` reports them (`LatencyStats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from packrat.workload.latency import LatencyStats
from packrat.workload.schedule import OpenLoop


@dataclass(frozen=True)
class Counts:
    """Requests of a stretch of the run: arrived, served, refused (503), their latency, and
    served requests per second over the stretch (nan if it lasts no time)."""

    name: str
    duration_s: float
    requests: int
    served: int
    refused: int
    throughput_rps: float
    latency: LatencyStats | None

    def to_json(self) -> dict[str, Any]:
        latency = self.latency
        return {
            "name": self.name,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "served": self.served,
            "refused": self.refused,
            "throughput_rps": _finite(self.throughput_rps),
            "latency_ms": None
            if latency is None
            else {
                "mean": latency.mean_ms,
                "p50": latency.p50_ms,
                "p90": latency.p90_ms,
                "p99": latency.p99_ms,
                "max": latency.max_ms,
            },
        }


@dataclass(frozen=True, eq=False)
class SimResult:
    """A finished simulation.

    load: the arrivals served. done_s: for each arrival, when its batch ended (seconds from
    the start; nan if it was refused). batch_sizes: requests per batch, in order.
    switch_times_s: when each switch of plans began. time_per_plan_s: seconds on each plan
    (`Plan.describe()`) until `end_s`, the later of the load's end and the last answer.
    """

    load: OpenLoop
    done_s: npt.NDArray[np.float64]
    batch_sizes: npt.NDArray[np.int64]
    switch_times_s: npt.NDArray[np.float64]
    time_per_plan_s: dict[str, float]
    end_s: float

    @property
    def served_mask(self) -> npt.NDArray[np.bool_]:
        return np.isfinite(self.done_s)

    @property
    def latencies_ms(self) -> npt.NDArray[np.float64]:
        """Latency of each served request in arrival order, ms."""
        served = self.served_mask
        return (self.done_s[served] - self.load.arrivals_s[served]) * 1000.0

    @property
    def switches(self) -> int:
        return int(self.switch_times_s.size)

    @property
    def mean_batch_size(self) -> float:
        return float(self.batch_sizes.mean()) if self.batch_sizes.size else math.nan

    def overall(self) -> Counts:
        """The whole run, over `end_s`."""
        return self._counts("overall", np.ones(self.done_s.size, dtype=bool), self.end_s)

    def phases(self) -> list[Counts]:
        """Each phase of the load, requests by arrival time, throughput over its duration."""
        index = self.load.phase_index()
        return [
            self._counts(phase.name, index == k, phase.duration_s)
            for k, phase in enumerate(self.load.phases)
        ]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: overall and per phase counts and latency, batches, switches, plans."""
        return {
            "overall": self.overall().to_json(),
            "phases": [phase.to_json() for phase in self.phases()],
            "batches": int(self.batch_sizes.size),
            "mean_batch_size": _finite(self.mean_batch_size),
            "switches": self.switches,
            "time_per_plan_s": dict(sorted(self.time_per_plan_s.items(), key=lambda kv: -kv[1])),
            "end_s": self.end_s,
        }

    def _counts(self, name: str, mask: npt.NDArray[np.bool_], duration_s: float) -> Counts:
        served = mask & self.served_mask
        latencies = (self.done_s[served] - self.load.arrivals_s[served]) * 1000.0
        n_served = int(served.sum())
        return Counts(
            name=name,
            duration_s=duration_s,
            requests=int(mask.sum()),
            served=n_served,
            refused=int(mask.sum()) - n_served,
            throughput_rps=n_served / duration_s if duration_s > 0 else math.nan,
            latency=LatencyStats.of(latencies.tolist()),
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
