"""Workloads, shared by the load generator (`packrat.bench.loadgen`) and the simulator
(`packrat.sim`): when requests arrive (`schedule`: open-loop Poisson, stepped and trace
arrivals, closed loops; bounded, seeded) and how their latency is summarized (`latency`).
Pure: no I/O but reading a trace file, no HTTP, no torch.
"""

from packrat.workload.latency import LatencyStats
from packrat.workload.schedule import (
    Bounds,
    ClosedLoop,
    OpenLoop,
    Phase,
    Schedule,
    from_offsets,
    parse_steps,
    poisson,
    read_trace,
    steps,
)

__all__ = [
    "Bounds",
    "ClosedLoop",
    "LatencyStats",
    "OpenLoop",
    "Phase",
    "Schedule",
    "from_offsets",
    "parse_steps",
    "poisson",
    "read_trace",
    "steps",
]
