"""What a run recorded, request by request, and its summary per phase and overall.

Times are seconds from the run's start on a monotonic clock. A request's latency counts from
its *scheduled* send time, not from when it was actually sent: a load generator that fell
behind (or a server that stalled it) must not hide the wait (no coordinated omission).
Latency statistics are over successful requests; failures are counted by kind.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from packrat.bench.loadgen.client import Target
from packrat.errors import PackratError
from packrat.workload.latency import LatencyStats
from packrat.workload.schedule import Phase


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request: scheduled, sent (None if never sent) and finished, in seconds from the start;
    the HTTP status (None without a response); the server's compute time if it gave one; the
    failure's kind ("" on success) and its detail."""

    phase: str
    scheduled_s: float
    sent_s: float | None
    done_s: float
    status: int | None = None
    compute_ms: float | None = None
    error: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.sent_s is not None and self.sent_s < self.scheduled_s - 1e-9:
            raise PackratError(
                f"request sent at {self.sent_s} s before its time {self.scheduled_s}"
            )

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def latency_ms(self) -> float | None:
        """From the scheduled send time to the reply; None if the request was never sent."""
        if self.sent_s is None:
            return None
        return (self.done_s - self.scheduled_s) * 1000.0


@dataclass(frozen=True)
class PhaseSummary:
    """One phase (or the whole run): counts, failures by kind, throughput, latency.

    `sent` counts requests that left the load generator; `failed` includes those that could
    not be sent. `throughput_rps` is successful replies over the phase's duration (nan for an
    empty stretch)."""

    name: str
    duration_s: float
    requests: int
    sent: int
    succeeded: int
    failed: int
    failures: dict[str, int]
    throughput_rps: float
    latency: LatencyStats | None

    @staticmethod
    def of(name: str, duration_s: float, records: list[RequestRecord]) -> PhaseSummary:
        ok = [r for r in records if r.ok]
        failures = Counter(r.error for r in records if not r.ok)
        return PhaseSummary(
            name=name,
            duration_s=duration_s,
            requests=len(records),
            sent=sum(r.sent_s is not None for r in records),
            succeeded=len(ok),
            failed=len(records) - len(ok),
            failures=dict(sorted(failures.items())),
            throughput_rps=len(ok) / duration_s if duration_s > 0 else math.nan,
            latency=LatencyStats.of([r.latency_ms for r in ok if r.latency_ms is not None]),
        )


@dataclass(frozen=True)
class LoadSummary:
    """Per phase, in schedule order, and the whole run."""

    phases: tuple[PhaseSummary, ...]
    overall: PhaseSummary


@dataclass(frozen=True)
class LoadResult:
    """A finished run: the target, its phases, every request in scheduled order.

    `start_unix_s` is the wall-clock time of offset 0, to place other clocks' events (such as
    a server's reconfigurations) on the run's timeline."""

    target: Target
    phases: tuple[Phase, ...]
    records: tuple[RequestRecord, ...]
    start_unix_s: float

    def __post_init__(self) -> None:
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise PackratError(f"phase names must be unique, got {names}")
        unknown = {r.phase for r in self.records} - set(names)
        if unknown:
            raise PackratError(f"records name unknown phases: {sorted(unknown)}")

    def summary(self) -> LoadSummary:
        by_phase: dict[str, list[RequestRecord]] = {p.name: [] for p in self.phases}
        for r in self.records:
            by_phase[r.phase].append(r)
        phases = tuple(PhaseSummary.of(p.name, p.duration_s, by_phase[p.name]) for p in self.phases)
        total_s = self.phases[-1].end_s - self.phases[0].start_s if self.phases else 0.0
        return LoadSummary(phases, PhaseSummary.of("overall", total_s, list(self.records)))
