"""Run a schedule against a target: `run_load` (blocking) and `run_load_async`.

Open loop: a dispatcher sleeps until each request's scheduled time and starts a task for it,
so a slow server never delays the next send (and a huge schedule never holds more than
`max_in_flight` tasks). A request that finds `max_in_flight` requests outstanding is not sent
and counts as a failure of kind `NOT_SENT`. Closed loop: N tasks each send back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from packrat.bench.loadgen.client import NOT_SENT, Payload, Reply, Target, send
from packrat.bench.loadgen.result import LoadResult, RequestRecord
from packrat.errors import PackratError
from packrat.progress import NullProgress, Progress
from packrat.workload.schedule import (
    DEFAULT_BOUNDS,
    Bounds,
    ClosedLoop,
    OpenLoop,
    Phase,
    Schedule,
    check,
)


@dataclass(frozen=True)
class LoadOptions:
    """What each request carries and how long it may take; the run's limits."""

    payload: Payload
    timeout_s: float = 30.0
    max_in_flight: int = 4096
    bounds: Bounds = DEFAULT_BOUNDS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise PackratError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_in_flight < 1:
            raise PackratError(f"max_in_flight must be >= 1, got {self.max_in_flight}")


def run_load(
    target: Target,
    schedule: Schedule,
    options: LoadOptions,
    *,
    progress: Progress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadResult:
    """Run `schedule` against `target` and return every request's record. Blocks; from
    inside an event loop, await `run_load_async` instead. `transport` replaces the network
    (tests pass an `httpx.MockTransport`)."""
    return asyncio.run(
        run_load_async(target, schedule, options, progress=progress, transport=transport)
    )


async def run_load_async(
    target: Target,
    schedule: Schedule,
    options: LoadOptions,
    *,
    progress: Progress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadResult:
    """`run_load` as a coroutine."""
    check(schedule, options.bounds)
    if isinstance(schedule, ClosedLoop) and schedule.concurrency > options.max_in_flight:
        raise PackratError(
            f"concurrency {schedule.concurrency} exceeds max_in_flight {options.max_in_flight}"
        )
    # One connection per outstanding request: queueing inside the client would be invisible.
    limits = httpx.Limits(
        max_connections=options.max_in_flight, max_keepalive_connections=options.max_in_flight
    )
    async with httpx.AsyncClient(
        transport=transport, limits=limits, timeout=options.timeout_s, trust_env=False
    ) as client:
        runner = _Runner(client, target, options, progress or NullProgress())
        if isinstance(schedule, OpenLoop):
            phases = await runner.open_loop(schedule)
        else:
            phases = await runner.closed_loop(schedule)
    records = sorted(runner.records, key=lambda r: r.scheduled_s)
    return LoadResult(target, phases, tuple(records), runner.start_unix_s)


@dataclass
class _Runner:
    client: httpx.AsyncClient
    target: Target
    options: LoadOptions
    progress: Progress
    records: list[RequestRecord] = field(default_factory=list)
    failed: int = 0
    _t0: float = field(default_factory=time.perf_counter)
    start_unix_s: float = field(default_factory=time.time)

    def now(self) -> float:
        """Seconds since the run started (monotonic)."""
        return time.perf_counter() - self._t0

    def _restart_clock(self) -> None:
        self._t0, self.start_unix_s = time.perf_counter(), time.time()

    def _add(self, record: RequestRecord) -> None:
        self.records.append(record)
        self.failed += not record.ok

    async def _one(self, phase: str, scheduled_s: float) -> None:
        sent_s = self.now()
        options = self.options
        try:
            reply = await send(self.client, self.target, options.payload, options.timeout_s)
        except Exception as exc:  # a bug in a transport must not end the run; it is recorded
            reply = Reply(None, error=type(exc).__name__, detail=str(exc))
        done_s = self.now()
        self._add(
            RequestRecord(
                phase,
                scheduled_s,
                sent_s,
                done_s,
                reply.status,
                reply.compute_ms,
                reply.error,
                reply.detail,
            )
        )

    async def open_loop(self, schedule: OpenLoop) -> tuple[Phase, ...]:
        names = [p.name for p in schedule.phases]
        phase_of = schedule.phase_index().tolist()
        cap = self.options.max_in_flight
        in_flight: set[asyncio.Task[None]] = set()
        ticker = self._start_progress(
            schedule.num_requests, lambda: len(self.records), schedule.duration_s
        )
        self._restart_clock()
        for at, phase_index in zip(schedule.arrivals_s.tolist(), phase_of, strict=True):
            # Sleep until the scheduled time (the loop's timers may wake a hair early); when
            # behind, still yield so that outstanding requests progress.
            await asyncio.sleep(max(0.0, at - self.now()))
            while (late := at - self.now()) > 0:
                await asyncio.sleep(late)
            phase = names[phase_index]
            if len(in_flight) >= cap:
                detail = f"{cap} requests were in flight"
                self._add(RequestRecord(phase, at, None, self.now(), error=NOT_SENT, detail=detail))
                continue
            task = asyncio.create_task(self._one(phase, at))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight)
        await ticker.stop()
        return schedule.phases

    async def closed_loop(self, schedule: ClosedLoop) -> tuple[Phase, ...]:
        bounds = self.options.bounds
        stop_s = min(schedule.duration_s or math.inf, bounds.max_duration_s)
        limit = min(schedule.requests or bounds.max_requests, bounds.max_requests)
        name = schedule.phase_name
        started = 0

        async def client_loop() -> None:
            nonlocal started
            while started < limit and self.now() < stop_s:
                started += 1
                await self._one(name, self.now())

        if schedule.duration_s is not None:
            ticker = self._start_progress(stop_s, lambda: min(self.now(), stop_s), stop_s)
        else:
            ticker = self._start_progress(limit, lambda: len(self.records), None)
        self._restart_clock()
        await asyncio.gather(*(client_loop() for _ in range(schedule.concurrency)))
        end_s = self.now()
        await ticker.stop()
        return (Phase(name, 0.0, end_s),)

    def _start_progress(
        self, total: float, done: Callable[[], float], expected_s: float | None
    ) -> _Ticker:
        # Coarse ticks: in a log each tick is a line, so about 50 of them whatever the length.
        interval_s = 1.0 if expected_s is None else min(10.0, max(0.5, expected_s / 50))
        self.progress.start(total, f"{self.target.model}: starting")
        return _Ticker(self, done, interval_s)

    def describe(self) -> str:
        ok = len(self.records) - self.failed
        return f"{self.target.model}: {ok} ok, {self.failed} failed"


class _Ticker:
    """Reports `done()` to the runner's progress every `interval_s` until stopped."""

    def __init__(self, runner: _Runner, done: Callable[[], float], interval_s: float) -> None:
        self._runner, self._done, self._interval_s = runner, done, interval_s
        self._stopped = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        reported = 0.0
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval_s)
            done = self._done()
            self._runner.progress.advance(done - reported, self._runner.describe())
            reported = done

    async def stop(self) -> None:
        """One last report, then stop."""
        self._stopped.set()
        await self._task
