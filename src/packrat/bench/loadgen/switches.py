"""What changes of plan do to the requests around them. Pure: records in, figures out.

A request is in flight from its scheduled send time (its latency counts from there) to its
reply, `[scheduled_s, done_s]`; a switch spans `[start_s, end_s]`, both on the load run's
clock (seconds from its start; `SwitchSpan.from_unix` converts a server's wall-clock times
with `LoadResult.start_unix_s`). Around one switch (`around_switches`):

- before: requests that finished in the `window_s` seconds before it began,
  `start_s - window_s <= done_s < start_s`;
- during: requests in flight at any moment of it, `scheduled_s <= end_s and done_s >= start_s`;
- after: requests scheduled in the `window_s` seconds after it ended,
  `end_s < scheduled_s <= end_s + window_s`.

No request is in two of them. A window may hold other switches (switching at every batch, it
will), so `switch_impact` also sorts every request of a run at once: in flight during any
switch, or during none (steady).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from packrat.bench.loadgen.result import RequestRecord
from packrat.errors import PackratError
from packrat.workload.latency import LatencyStats


@dataclass(frozen=True)
class SwitchSpan:
    """A change of plan from `start_s` to `end_s`, seconds from the load run's start."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s)):
            raise PackratError(f"a switch needs finite times, got {self.start_s}, {self.end_s}")
        if self.end_s < self.start_s:
            raise PackratError(f"a switch cannot end ({self.end_s}) before it starts")

    @staticmethod
    def from_unix(at_unix_s: float, took_s: float, start_unix_s: float) -> SwitchSpan:
        """A switch begun at wall-clock `at_unix_s` that took `took_s`, on the clock of a run
        that started at wall-clock `start_unix_s`."""
        start_s = at_unix_s - start_unix_s
        return SwitchSpan(start_s, start_s + took_s)


@dataclass(frozen=True)
class RequestSet:
    """Some requests: how many, how many failed, the latency of the successful ones."""

    requests: int
    failed: int
    latency: LatencyStats | None

    @staticmethod
    def of(records: Sequence[RequestRecord]) -> RequestSet:
        latencies = [r.latency_ms for r in records if r.ok and r.latency_ms is not None]
        failed = sum(not r.ok for r in records)
        return RequestSet(len(records), failed, LatencyStats.of(latencies))

    @property
    def p99_ms(self) -> float:
        """The p99 latency, nan without successful requests."""
        return math.nan if self.latency is None else self.latency.p99_ms


@dataclass(frozen=True)
class AroundSwitch:
    """The requests before, during and after one switch (see the module's docstring)."""

    span: SwitchSpan
    before: RequestSet
    during: RequestSet
    after: RequestSet


@dataclass(frozen=True)
class SwitchImpact:
    """A run's requests split in two: in flight during at least one switch, and the rest."""

    during: RequestSet
    steady: RequestSet

    @property
    def p99_ratio(self) -> float:
        """p99 during switches over steady p99; nan if either has no latency."""
        steady_ms = self.steady.p99_ms
        return self.during.p99_ms / steady_ms if steady_ms > 0 else math.nan


def around_switches(
    records: Sequence[RequestRecord], spans: Sequence[SwitchSpan], window_s: float
) -> list[AroundSwitch]:
    """Per switch, in the order given: its requests before, during and after, with windows of
    `window_s` seconds before and after."""
    if not (math.isfinite(window_s) and window_s >= 0):
        raise PackratError(f"window_s must be >= 0 s, got {window_s}")
    scheduled_s, done_s = _bounds(records)

    def pick(mask: npt.NDArray[np.bool_]) -> RequestSet:
        return RequestSet.of([records[i] for i in np.flatnonzero(mask).tolist()])

    around = []
    for span in spans:
        before = (done_s >= span.start_s - window_s) & (done_s < span.start_s)
        during = (scheduled_s <= span.end_s) & (done_s >= span.start_s)
        after = (scheduled_s > span.end_s) & (scheduled_s <= span.end_s + window_s)
        around.append(AroundSwitch(span, pick(before), pick(during), pick(after)))
    return around


def switch_impact(records: Sequence[RequestRecord], spans: Sequence[SwitchSpan]) -> SwitchImpact:
    """The requests in flight during any of `spans` against those in flight during none."""
    mask = in_flight_during_any(records, spans)
    during = [r for r, hit in zip(records, mask, strict=True) if hit]
    steady = [r for r, hit in zip(records, mask, strict=True) if not hit]
    return SwitchImpact(RequestSet.of(during), RequestSet.of(steady))


def in_flight_during_any(
    records: Sequence[RequestRecord], spans: Sequence[SwitchSpan]
) -> list[bool]:
    """For each record, whether it was in flight during at least one of `spans`."""
    scheduled_s, done_s = _bounds(records)
    if not spans:
        return [False] * len(records)
    ordered = sorted(spans, key=lambda s: s.start_s)
    starts = np.array([s.start_s for s in ordered])
    # A request overlaps some switch iff, among the switches begun by its reply, the latest
    # end is not before its scheduled time.
    latest_end = np.maximum.accumulate(np.array([s.end_s for s in ordered]))
    last_begun = np.searchsorted(starts, done_s, side="right") - 1
    hit = (last_begun >= 0) & (latest_end[np.maximum(last_begun, 0)] >= scheduled_s)
    return [bool(h) for h in hit]


def _bounds(
    records: Sequence[RequestRecord],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each record's scheduled time and reply time, as arrays."""
    scheduled_s = np.array([r.scheduled_s for r in records], dtype=np.float64)
    done_s = np.array([r.done_s for r in records], dtype=np.float64)
    return scheduled_s, done_s
