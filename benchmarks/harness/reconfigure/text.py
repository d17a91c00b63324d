"""How benchmarks/reconfigure.py's report writes a number, a plan or a verdict in a table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from packrat.bench.loadgen import Phase, PhaseSummary, RequestSet


def plans(plans: Iterable[str]) -> str:
    return ", ".join(f"`{plan}`" for plan in plans)


def phase_at(phases: Sequence[Phase], at_s: float) -> str:
    return next((p.name for p in reversed(phases) if p.start_s <= at_s), "-")


def p50_p99(summary: PhaseSummary) -> str:
    lat = summary.latency
    return "-" if lat is None else f"{ms(lat.p50_ms)} / {ms(lat.p99_ms)}"


def p50(summary: PhaseSummary) -> str:
    lat = summary.latency
    return "-" if lat is None else ms(lat.p50_ms)


def n_p50_p99(requests: RequestSet) -> str:
    lat = requests.latency
    failed = f" ({requests.failed} failed)" if requests.failed else ""
    if lat is None:
        return f"{requests.requests}{failed}"
    return f"{requests.requests} / {ms(lat.p50_ms)} / {ms(lat.p99_ms)}{failed}"


def ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def verdict(met: bool | None) -> str:
    """None: nothing to judge."""
    if met is None:
        return "n/a"
    return "met" if met else "**missed**"


def finite_or(value: float, default: float = -math.inf) -> float:
    return value if math.isfinite(value) else default
