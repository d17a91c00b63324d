"""When requests arrive at the simulated server: the load generator's open-loop schedules.

Poisson, stepped and trace arrivals are made by `packrat.workload.schedule`, which the load
generator uses too, so a seed gives the simulator the very arrival times `packrat loadgen`
sends (which is what `benchmarks/simulate_validate.py` relies on). Only the bounds differ: a
simulation may run for days of simulated time. `bursts` adds what the load generator does as a
closed loop: groups of requests sent at once, far enough apart that each finds the server idle.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from packrat.errors import PackratError
from packrat.workload.schedule import (
    Bounds,
    OpenLoop,
    Phase,
    parse_steps,
    poisson,
    read_trace,
    steps,
)

SIM_BOUNDS = Bounds(max_requests=50_000_000, max_duration_s=30 * 24 * 3600.0)
"""Simulated time is cheap: up to 50 million requests and 30 days."""

__all__ = ["SIM_BOUNDS", "bursts", "poisson_load", "stepped", "trace"]


def poisson_load(rate_rps: float, duration_s: float, seed: int = 0) -> OpenLoop:
    """Poisson arrivals at `rate_rps` for `duration_s` seconds (`packrat loadgen --rate`)."""
    return poisson(rate_rps, duration_s, seed, SIM_BOUNDS)


def stepped(text: str, seed: int = 0) -> OpenLoop:
    """Poisson arrivals in phases "RATE:SECONDS,..." (`packrat loadgen --steps`)."""
    return steps(parse_steps(text), seed, SIM_BOUNDS)


def trace(path: Path) -> OpenLoop:
    """Arrival offsets from a file: seconds one a line, a CSV with a `t_s` column, or a CSV
    written by `packrat loadgen` (the requests' `scheduled_s`)."""
    return read_trace(path, SIM_BOUNDS)


def bursts(size: int, count: int, period_s: float) -> OpenLoop:
    """`count` bursts of `size` requests arriving at once, one every `period_s` seconds.

    With `period_s` longer than a burst takes to serve, every burst finds the server idle, so
    this is the closed loop "send N at once, the next N when all are answered" (the paper's
    latency per batch size) with the idle gaps left in.
    """
    if size < 1 or count < 1:
        raise PackratError(f"bursts need size >= 1 and count >= 1, got {size} and {count}")
    if not (math.isfinite(period_s) and period_s > 0):
        raise PackratError(f"the burst period must be > 0 s, got {period_s}")
    starts = np.arange(count, dtype=np.float64) * period_s
    arrivals = np.repeat(starts, size)
    name = f"bursts of {size}"
    return OpenLoop(arrivals, (Phase(name, 0.0, count * period_s),))
