"""A load generator for a server on this machine: open-loop (Poisson, steps, trace) or
closed-loop schedules, latency measured from each request's scheduled time, reports as JSON,
CSV, a table and a timeline plot; latency before, during and after a server's changes of plan.

    schedule = steps([(5, 10), (40, 10)], seed=0)
    target = Target("http://127.0.0.1:8080", "resnet50")
    payload = Payload.random(target.protocol, (3, 224, 224))
    result = run_load(target, schedule, LoadOptions(payload))
    write_json(result, Path("load.json"))

Needs httpx. Never imports torch.
"""

from packrat.bench.loadgen.client import NOT_SENT, Payload, Protocol, Target, check_loopback
from packrat.bench.loadgen.report import (
    plot_timeline,
    read_csv,
    read_json,
    summary_table,
    write_csv,
    write_json,
)
from packrat.bench.loadgen.result import (
    LoadResult,
    LoadSummary,
    PhaseSummary,
    RequestRecord,
)
from packrat.bench.loadgen.run import LoadOptions, run_load, run_load_async
from packrat.bench.loadgen.switches import (
    AroundSwitch,
    RequestSet,
    SwitchImpact,
    SwitchSpan,
    around_switches,
    in_flight_during_any,
    switch_impact,
)
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
    "NOT_SENT",
    "AroundSwitch",
    "Bounds",
    "ClosedLoop",
    "LatencyStats",
    "LoadOptions",
    "LoadResult",
    "LoadSummary",
    "OpenLoop",
    "Payload",
    "Phase",
    "PhaseSummary",
    "Protocol",
    "RequestRecord",
    "RequestSet",
    "Schedule",
    "SwitchImpact",
    "SwitchSpan",
    "Target",
    "around_switches",
    "check_loopback",
    "from_offsets",
    "in_flight_during_any",
    "parse_steps",
    "plot_timeline",
    "poisson",
    "read_csv",
    "read_json",
    "read_trace",
    "run_load",
    "run_load_async",
    "steps",
    "summary_table",
    "switch_impact",
    "write_csv",
    "write_json",
]
