"""Running schedules against a fake server (httpx.MockTransport): latency from the scheduled
time (no coordinated omission), the in-flight cap, closed loops, progress."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
import pytest

from packrat.bench.loadgen import (
    NOT_SENT,
    Bounds,
    ClosedLoop,
    LoadOptions,
    Payload,
    Target,
    from_offsets,
    run_load,
    steps,
)
from packrat.errors import PackratError

TARGET = Target("http://127.0.0.1:9", "m")
OPTIONS = LoadOptions(Payload(b"x", "application/octet-stream"), timeout_s=5.0)


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=[0.0], headers={"Server-Timing": "compute;dur=1.25"})


def test_a_late_send_counts_from_its_scheduled_time() -> None:
    calls = 0

    def stalling(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            time.sleep(0.3)  # blocks the event loop: the second request cannot leave on time
        return ok(request)

    result = run_load(
        TARGET, from_offsets([0.0, 0.05]), OPTIONS, transport=httpx.MockTransport(stalling)
    )
    first, second = result.records
    assert second.scheduled_s == 0.05
    assert second.sent_s is not None and second.sent_s - second.scheduled_s > 0.2
    assert second.latency_ms == pytest.approx((second.done_s - 0.05) * 1000.0)
    assert second.latency_ms > 250.0  # measured from the send would say ~0
    assert first.latency_ms is not None and first.latency_ms > 250.0
    assert second.compute_ms == 1.25 and second.status == 200 and second.ok


def test_sends_wait_for_their_scheduled_times() -> None:
    offsets = [0.0, 0.1, 0.2, 0.3]
    result = run_load(TARGET, from_offsets(offsets), OPTIONS, transport=httpx.MockTransport(ok))
    for record, at in zip(result.records, offsets, strict=True):
        assert record.scheduled_s == at
        assert record.sent_s is not None and at <= record.sent_s < at + 0.08
        assert record.done_s >= record.sent_s
    assert result.start_unix_s == pytest.approx(time.time(), abs=10)


def test_requests_beyond_the_in_flight_cap_are_not_sent() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return httpx.Response(200)

    options = LoadOptions(OPTIONS.payload, max_in_flight=2)
    result = run_load(TARGET, from_offsets([0.0] * 5), options, transport=httpx.MockTransport(slow))
    sent = [r for r in result.records if r.sent_s is not None]
    unsent = [r for r in result.records if r.sent_s is None]
    assert len(sent) == 2 and all(r.ok for r in sent)
    assert len(unsent) == 3 and {r.error for r in unsent} == {NOT_SENT}
    assert all(r.latency_ms is None for r in unsent)
    overall = result.summary().overall
    assert (overall.sent, overall.succeeded, overall.failed) == (2, 2, 3)
    assert overall.failures == {NOT_SENT: 3}


def test_failures_are_recorded_per_request() -> None:
    calls = itertools.count(1)

    def flaky(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500 if next(calls) % 2 else 200)

    result = run_load(
        TARGET, from_offsets([0.0, 0.01, 0.02, 0.03]), OPTIONS, transport=httpx.MockTransport(flaky)
    )
    assert [r.status for r in result.records] == [500, 200, 500, 200]
    assert result.summary().overall.failures == {"HTTP 500": 2}


def test_records_belong_to_their_phases() -> None:
    schedule = steps([(40, 0.25), (80, 0.25)], seed=0)
    result = run_load(TARGET, schedule, OPTIONS, transport=httpx.MockTransport(ok))
    assert len(result.records) == schedule.num_requests
    assert result.phases == schedule.phases
    summary = result.summary()
    for phase, s in zip(schedule.phases, summary.phases, strict=True):
        inside = [r for r in result.records if phase.start_s <= r.scheduled_s < phase.end_s]
        assert s.requests == len(inside) and all(r.phase == phase.name for r in inside)


def test_closed_loop_keeps_n_requests_outstanding() -> None:
    outstanding, most = 0, 0

    async def counting(request: httpx.Request) -> httpx.Response:
        nonlocal outstanding, most
        outstanding += 1
        most = max(most, outstanding)
        await asyncio.sleep(0.005)
        outstanding -= 1
        return httpx.Response(200)

    schedule = ClosedLoop(3, requests=30)
    result = run_load(TARGET, schedule, OPTIONS, transport=httpx.MockTransport(counting))
    assert len(result.records) == 30 and all(r.ok for r in result.records)
    assert most == 3
    # A client's next request is due when its previous reply arrives, and leaves at once.
    assert all(r.sent_s is not None and r.sent_s - r.scheduled_s < 0.05 for r in result.records)
    (phase,) = result.phases
    assert phase.name == "closed loop x 3" and phase.end_s >= max(r.done_s for r in result.records)


def test_closed_loop_for_a_duration() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return httpx.Response(200)

    result = run_load(
        TARGET, ClosedLoop(2, duration_s=0.3), OPTIONS, transport=httpx.MockTransport(slow)
    )
    assert 4 <= len(result.records) <= 40
    assert all(r.scheduled_s < 0.3 for r in result.records)
    assert result.phases[0].end_s >= 0.3


def test_bounds_are_checked_again_when_run() -> None:
    big = from_offsets([0.0] * 10)
    options = LoadOptions(OPTIONS.payload, bounds=Bounds(max_requests=5))
    with pytest.raises(PackratError, match="more than the limit of 5"):
        run_load(TARGET, big, options, transport=httpx.MockTransport(ok))
    with pytest.raises(PackratError, match="max_in_flight"):
        run_load(TARGET, ClosedLoop(10, requests=10), LoadOptions(OPTIONS.payload, max_in_flight=4))


@pytest.mark.parametrize(("field", "value"), [("timeout_s", 0.0), ("max_in_flight", 0)])
def test_options_are_validated(field: str, value: float) -> None:
    with pytest.raises(PackratError, match=field):
        LoadOptions(OPTIONS.payload, **{field: value})  # type: ignore[arg-type]


class RecordingProgress:
    def __init__(self) -> None:
        self.total = 0.0
        self.done = 0.0
        self.descriptions: list[str] = []

    def start(self, total_units: float, description: str) -> None:
        self.total = total_units

    def advance(self, units: float, description: str | None = None) -> None:
        self.done += units
        self.descriptions.append(description or "")


def test_progress_reaches_the_total() -> None:
    progress = RecordingProgress()
    schedule = from_offsets([0.0, 0.1, 0.2])
    run_load(TARGET, schedule, OPTIONS, progress=progress, transport=httpx.MockTransport(ok))
    assert progress.total == 3 and progress.done == 3
    assert progress.descriptions[-1] == "m: 3 ok, 0 failed"
