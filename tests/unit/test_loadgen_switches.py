"""Latency around changes of plan: which requests fall before, during and after a switch (the
boundaries included), and in flight during any switch against steady, checked against plain
loops over the same definitions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packrat.bench.loadgen import (
    NOT_SENT,
    RequestRecord,
    RequestSet,
    SwitchSpan,
    around_switches,
    in_flight_during_any,
    switch_impact,
)
from packrat.errors import PackratError


def ok(scheduled_s: float, done_s: float) -> RequestRecord:
    return RequestRecord("p", scheduled_s, scheduled_s, done_s, 200)


def failed(scheduled_s: float, done_s: float) -> RequestRecord:
    return RequestRecord("p", scheduled_s, scheduled_s, done_s, 503, None, "HTTP 503")


def latencies(requests: RequestSet) -> tuple[int, float, float]:
    assert requests.latency is not None
    return requests.latency.count, requests.latency.p50_ms, requests.latency.max_ms


def test_each_request_falls_before_during_or_after_a_switch() -> None:
    span = SwitchSpan(10.0, 10.5)
    records = [
        ok(7.0, 7.9),  # finished before the 2 s window: in none
        ok(7.5, 8.0),  # before: finished as the window opens
        ok(9.0, 9.99),  # before
        ok(9.5, 10.0),  # during: finished as the switch began
        ok(10.2, 10.3),  # during
        ok(10.5, 10.6),  # during: scheduled as the switch ended
        ok(9.0, 12.0),  # during: in flight all along
        failed(10.1, 10.2),  # during, failed
        ok(10.51, 10.8),  # after
        ok(12.5, 13.0),  # after: scheduled as the window closes
        RequestRecord("p", 11.0, None, 11.0, error=NOT_SENT),  # after, never sent
        ok(12.6, 12.7),  # scheduled after the window: in none
    ]
    [around] = around_switches(records, [span], window_s=2.0)
    assert around.span == span
    assert (around.before.requests, around.before.failed) == (2, 0)
    assert latencies(around.before) == (2, pytest.approx(745.0), pytest.approx(990.0))
    assert (around.during.requests, around.during.failed) == (5, 1)
    assert latencies(around.during) == (4, pytest.approx(300.0), pytest.approx(3000.0))
    assert (around.after.requests, around.after.failed) == (3, 1)
    assert latencies(around.after) == (2, pytest.approx(395.0), pytest.approx(500.0))


def test_a_window_without_requests_has_no_latency() -> None:
    [around] = around_switches([ok(0.0, 0.1)], [SwitchSpan(5.0, 5.0)], window_s=1.0)
    assert around.before == around.during == around.after == RequestSet(0, 0, None)
    assert math.isnan(around.during.p99_ms)


def test_a_long_switch_counts_after_a_later_short_one_has_ended() -> None:
    # The switch begun last before the reply (at 2 s) ended at 3 s, but the one begun at 0 s
    # lasts until 10 s: the request, in flight from 5 s to 6 s, overlaps it.
    spans = [SwitchSpan(2.0, 3.0), SwitchSpan(0.0, 10.0)]
    records = [ok(5.0, 6.0), ok(11.0, 12.0), ok(0.0, 0.0)]
    assert in_flight_during_any(records, spans) == [True, False, True]


def test_without_switches_every_request_is_steady() -> None:
    records = [ok(0.0, 0.1), failed(1.0, 1.2)]
    assert in_flight_during_any(records, []) == [False, False]
    impact = switch_impact(records, [])
    assert impact.during == RequestSet(0, 0, None)
    assert impact.steady.requests == 2 and impact.steady.failed == 1
    assert math.isnan(impact.p99_ratio)


def test_impact_compares_p99_during_switches_with_steady() -> None:
    steady = [ok(float(i), float(i) + 0.1) for i in range(10)]  # 100 ms each
    slow = [ok(19.5, 20.1), ok(19.8, 20.0)]  # 600 and 200 ms, over the switch at 20 s
    impact = switch_impact(steady + slow, [SwitchSpan(20.0, 20.001)])
    assert impact.during.requests == 2 and impact.steady.requests == 10
    assert impact.during.p99_ms == pytest.approx(596.0)  # numpy's linear interpolation
    assert impact.p99_ratio == pytest.approx(5.96)


def test_from_unix_puts_a_switch_on_the_run_clock() -> None:
    span = SwitchSpan.from_unix(at_unix_s=1_700_000_012.5, took_s=0.002, start_unix_s=1.7e9)
    assert span.start_s == pytest.approx(12.5) and span.end_s == pytest.approx(12.502)


def test_bad_spans_and_windows_are_refused() -> None:
    with pytest.raises(PackratError, match="before it starts"):
        SwitchSpan(2.0, 1.0)
    with pytest.raises(PackratError, match="finite"):
        SwitchSpan(math.nan, 1.0)
    with pytest.raises(PackratError, match="window_s"):
        around_switches([], [SwitchSpan(0.0, 1.0)], window_s=-1.0)


# A coarse grid of times, so that requests often start or end exactly at a switch's bounds.
times = st.integers(0, 80).map(lambda k: k / 4)


@st.composite
def records_st(draw: st.DrawFn) -> list[RequestRecord]:
    made = []
    for scheduled_s, took_s, good in draw(
        st.lists(st.tuples(times, times, st.booleans()), max_size=40)
    ):
        done_s = scheduled_s + took_s / 8
        made.append(ok(scheduled_s, done_s) if good else failed(scheduled_s, done_s))
    return sorted(made, key=lambda r: r.scheduled_s)


spans_st = st.lists(
    st.tuples(times, times).map(lambda t: SwitchSpan(t[0], t[0] + t[1] / 16)), max_size=6
)


def overlaps(r: RequestRecord, span: SwitchSpan) -> bool:
    return max(r.scheduled_s, span.start_s) <= min(r.done_s, span.end_s)


@given(records_st(), spans_st, times)
def test_windows_match_plain_loops(
    records: list[RequestRecord], spans: list[SwitchSpan], window_s: float
) -> None:
    arounds = around_switches(records, spans, window_s)
    assert [a.span for a in arounds] == spans
    for span, around in zip(spans, arounds, strict=True):
        start, end = span.start_s, span.end_s
        before = [r for r in records if start - window_s <= r.done_s < start]
        during = [r for r in records if overlaps(r, span)]
        after = [r for r in records if end < r.scheduled_s <= end + window_s]
        assert around.before == RequestSet.of(before)
        assert around.during == RequestSet.of(during)
        assert around.after == RequestSet.of(after)
        # The three split, without overlap, every request not wholly outside the windows.
        near = [
            r for r in records if r.done_s >= start - window_s and r.scheduled_s <= end + window_s
        ]
        counts = around.before.requests + around.during.requests + around.after.requests
        assert counts == len(near)


@given(records_st(), spans_st)
def test_during_any_is_the_union_of_each_switchs_during(
    records: list[RequestRecord], spans: list[SwitchSpan]
) -> None:
    hits = in_flight_during_any(records, spans)
    assert hits == [any(overlaps(r, span) for span in spans) for r in records]
    impact = switch_impact(records, spans)
    assert impact.during == RequestSet.of([r for r, hit in zip(records, hits, strict=True) if hit])
    assert impact.during.requests + impact.steady.requests == len(records)
    assert impact.during.failed + impact.steady.failed == sum(not r.ok for r in records)
