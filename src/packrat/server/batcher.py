"""Dynamic batching with TorchServe's semantics, one batch at a time per model.

Requests gather in a FIFO queue. A batch is dispatched as soon as `max_batch_size` requests
are waiting, or `max_batch_delay_ms` after the *first* request of the forming batch arrived,
whichever comes first. Only one batch runs at a time (a model's instance pool serves one
batch at a time): the next batch gathers while one runs, and if its first request has already
waited longer than the delay when the running batch ends, it is dispatched at once.

The batcher knows nothing of models or torch: it is generic over the request and response
types and calls `run_batch(requests) -> one response or exception per request, by position`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from packrat.server.api import Unavailable

Req = TypeVar("Req")
Resp = TypeVar("Resp")

logger = logging.getLogger(__name__)


DEFAULT_MAX_QUEUE = 100
"""Requests a model queues before refusing more with 503, as TorchServe's job_queue_size: a
flood then costs bounded memory and latency instead of both growing without end."""

DEFAULT_MAX_QUEUE_WAIT_MS: float | None = None
"""No bound on the expected wait by default: `max_queue` alone bounds the queue, as
TorchServe's job_queue_size does. A bound on the wait refuses the ordinary queue of a closed
loop of clients (bert-base on 2 cores: 100 clients wait about 13 full batches of 1 s each),
so it is for a user who would rather refuse than keep a request waiting longer than an SLO."""

WAIT_ALPHA = 0.25
"""Weight of the newest batch in the running estimate of a batch's time (per batch size)."""

QUEUE_FULL_RETRY_AFTER_S = 1
"""Retry-After (seconds) on a request refused because its model's queue is full: the queue
moves by a batch at a time, so a second is usually enough for room to appear."""


@dataclass(frozen=True)
class BatchingConfig:
    """How one model's requests are batched.

    max_batch_size: most requests in one batch (>= 1).
    max_batch_delay_ms: longest a batch waits for more requests after its first one arrived,
        in milliseconds (>= 0; 0 dispatches whatever is waiting at once).
    max_queue: most requests waiting (not counting the running batch); more are refused
        with Unavailable.
    max_queue_wait_ms: if set (> 0), a request is also refused when the requests ahead of it
        would take longer than this to serve: queued / max_batch_size full batches at the
        expected time of a full batch, plus what is left of the running batch (`BatchTimes`).
        A full batch's worth is always admitted. None (the default): no such bound.
    """

    max_batch_size: int = 8
    max_batch_delay_ms: float = 5.0
    max_queue: int = DEFAULT_MAX_QUEUE
    max_queue_wait_ms: float | None = DEFAULT_MAX_QUEUE_WAIT_MS

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BatchingConfig.{name} must be an int >= 1, got {value!r}")
        wait = self.max_queue_wait_ms
        if wait is not None and (
            isinstance(wait, bool) or not isinstance(wait, int | float) or not wait > 0
        ):
            raise ValueError(
                f"BatchingConfig.max_queue_wait_ms must be a number > 0 or None, got {wait!r}"
            )
        delay = self.max_batch_delay_ms
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not (math.isfinite(delay) and delay >= 0)
        ):
            raise ValueError(
                f"BatchingConfig.max_batch_delay_ms must be a finite number >= 0, got {delay!r}"
            )


@dataclass(eq=False)  # identity equality: a queue entry is removed by identity
class _Pending(Generic[Req, Resp]):
    request: Req
    future: asyncio.Future[Resp]
    enqueued_s: float  # event-loop clock, seconds


RunBatch = Callable[[list[Req]], Awaitable[list[Resp | BaseException]]]


class Batcher(Generic[Req, Resp]):
    """Queue requests, run them in batches through `run_batch`, answer each submitter.

    `run_batch` gets the requests of one batch in arrival order and returns, for each, its
    response or the exception to raise in its submitter. If `run_batch` itself raises, every
    request of that batch fails with that exception and the batcher carries on. `on_batch`
    is called with the size of every batch just before it runs. `predict_s(size)`, if given,
    is how long a batch of `size` should take (e.g. by the model's profile; None where it
    cannot say), the first estimate of a batch's time for admission (`BatchTimes`).

    If the loop itself dies of an unexpected exception (a bug outside `run_batch`), every
    queued and running request gets Unavailable, later submits are refused, and `failure`
    says why.

    Use from one event loop: `await start()`, then `await submit(request)` from any number of
    tasks, then `await stop()`.
    """

    def __init__(
        self,
        run_batch: RunBatch[Req, Resp],
        config: BatchingConfig | None = None,
        *,
        on_batch: Callable[[int], None] | None = None,
        predict_s: Callable[[int], float | None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._config = config if config is not None else BatchingConfig()
        self._on_batch = on_batch
        self._queue: collections.deque[_Pending[Req, Resp]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: list[_Pending[Req, Resp]] = []
        self._running_since: float | None = None  # event-loop time the running batch began
        self._times = BatchTimes(predict_s)  # how long batches of each size take
        self._stopping = False
        self._failure: str | None = None  # why the loop died, once it has

    @property
    def config(self) -> BatchingConfig:
        return self._config

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the running one)."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests in the batch now running (0 if none)."""
        return len(self._running)

    @property
    def accepting(self) -> bool:
        """Whether `submit` takes new requests: started, not stopping, and its loop alive."""
        return self._task is not None and not self._task.done() and not self._stopping

    @property
    def failure(self) -> str | None:
        """Why the batching loop died of an unexpected exception (every request it held was
        answered with Unavailable, and no more are taken); None while it has not."""
        return self._failure

    async def start(self) -> None:
        """Start the batching loop in the running event loop. Idempotent."""
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, request: Req) -> Resp:
        """The response to `request`, once its batch has run.

        Raises the exception `run_batch` gave for this request, or Unavailable if the batcher
        is not running or `max_queue` requests are already waiting. Cancelling the caller
        (e.g. the client went away) drops the request if it is still queued; if its batch
        already runs, the result is discarded and the rest of the batch is unaffected.
        """
        if self._failure is not None:
            raise Unavailable(f"the model's batch loop failed ({self._failure})")
        if not self.accepting:
            raise Unavailable("the model is not accepting requests (not started or stopping)")
        refused = refusal(len(self._queue), self._config, self._times, *self._running_batch())
        if refused is not None:
            raise Unavailable(refused, retry_after_s=QUEUE_FULL_RETRY_AFTER_S)
        loop = asyncio.get_running_loop()
        pending: _Pending[Req, Resp] = _Pending(request, loop.create_future(), loop.time())
        self._queue.append(pending)
        self._wakeup.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            if pending in self._queue:
                self._queue.remove(pending)
                self._wakeup.set()  # the forming batch's first request may have changed
            raise

    async def stop(self, drain: bool = True) -> None:
        """Stop taking requests (new submits get Unavailable) and end the loop.

        drain=True: queued requests are dispatched at once (no more can join their batch) and
        this returns when they and the running batch have answered. drain=False: queued
        requests and the running batch's submitters get Unavailable right away; the running
        `run_batch` call is cancelled (a thread it started runs on; closing the pool ends it).
        """
        self._stopping = True
        self._wakeup.set()
        task = self._task
        if task is None:
            self._fail_queued("the model was stopped before it started")
            return
        if not drain:
            self._fail_queued("the model is shutting down")
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():  # our caller was cancelled, not the loop
                raise

    # --- the loop ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        reason = "the model is shutting down"
        try:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    return
                await self._dispatch(batch)
        except Exception as exc:
            # A bug outside run_batch (which fails only its own batch): nothing would ever
            # answer the queue again, so answer everyone now and take no more requests.
            self._failure = f"{type(exc).__name__}: {exc}"
            reason = f"the model's batch loop failed ({self._failure})"
            logger.exception(
                "batch loop failed; answering %d queued and %d running requests with 503",
                len(self._queue), len(self._running),
            )  # fmt: skip
        except asyncio.CancelledError:
            if not self._stopping:  # not stop(drain=False): e.g. run_batch raised it
                self._failure = "it was cancelled"
                reason = f"the model's batch loop failed ({self._failure})"
                logger.exception("batch loop cancelled while serving")
            raise
        finally:
            # Whatever ended the loop (a stop, a failure, a cancellation from outside), no
            # request it holds may be left waiting: a normal stop leaves none.
            for pending in self._running:
                _answer(pending, Unavailable(reason))
            self._running, self._running_since = [], None
            self._fail_queued(reason)

    async def _next_batch(self) -> list[_Pending[Req, Resp]] | None:
        """Wait for the next batch to be due; None when stopping with nothing left."""
        loop = asyncio.get_running_loop()
        delay_s = self._config.max_batch_delay_ms / 1000.0
        size = self._config.max_batch_size
        while True:
            self._wakeup.clear()
            if not self._queue:
                if self._stopping:
                    return None
                await self._wakeup.wait()
                continue
            remaining_s = self._queue[0].enqueued_s + delay_s - loop.time()
            if len(self._queue) >= size or remaining_s <= 0 or self._stopping:
                return [self._queue.popleft() for _ in range(min(size, len(self._queue)))]
            with contextlib.suppress(TimeoutError):  # the deadline passed: re-checked above
                await asyncio.wait_for(self._wakeup.wait(), remaining_s)

    def expected_wait_ms(self) -> float:
        """How long a request queued now would wait: the batches ahead of it (the queued
        requests' and the running one) at the recent batch times (0 before any batch ran)."""
        return expected_wait_ms(
            len(self._queue), self._config.max_batch_size, self._times, *self._running_batch()
        )

    def _running_batch(self) -> tuple[int, float | None]:
        """The running batch: its size and how long it has run, seconds (0, None if none
        runs)."""
        if self._running_since is None:
            return 0, None
        return len(self._running), asyncio.get_running_loop().time() - self._running_since

    async def _dispatch(self, batch: list[_Pending[Req, Resp]]) -> None:
        self._running = batch
        started = self._running_since = asyncio.get_running_loop().time()
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch))
            except Exception:  # a metrics hook must not fail requests
                logger.exception("on_batch hook failed")
        try:
            results = await self._run_batch([p.request for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"run_batch returned {len(results)} results for {len(batch)} requests"
                )
        except Exception as exc:
            logger.warning("batch of %d failed: %s", len(batch), exc)
            results = [exc] * len(batch)
        for pending, result in zip(batch, results, strict=True):
            _answer(pending, result)
        self._running, self._running_since = [], None
        self._times.record(len(batch), asyncio.get_running_loop().time() - started)

    def _fail_queued(self, reason: str) -> None:
        while self._queue:
            _answer(self._queue.popleft(), Unavailable(reason))


# --- admission, as pure functions (the simulator, packrat.sim, runs them too) -------------------


@dataclass
class BatchTimes:
    """How long batches take, per batch size: a running average of each size's times, first
    estimated from a prediction when there is one.

    Admission asks how long the batches ahead of a request will take. One average over every
    batch does not answer that when the batch size changes with the load: at the onset of a
    flood, batches of 1 had run (bert-base on 2 cores: 0.15 s), the queue of full batches
    ahead of a new request was costed at 0.15 s a batch instead of 1.15 s, and requests were
    admitted to wait 9 s (docs/robustness-flood.md).

    `predict_s(size)` (e.g. the profile's latency of a batch of `size` on the running plan,
    seconds; None where it cannot say) shapes the estimate of a size that has not run yet:
    it is scaled by how the nearest size that has run compared with its own prediction, since
    the profile times the model alone and a served batch adds its serving overhead. Without
    it, an unseen size is the nearest seen one scaled in proportion to the size: cautious
    where batching is efficient, since a full batch is costed as that many single requests.
    """

    predict_s: Callable[[int], float | None] | None = None
    _average_s: dict[int, float] = field(default_factory=dict)

    def record(self, size: int, took_s: float) -> None:
        """One more batch of `size` requests took `took_s` seconds."""
        previous = self._average_s.get(size)
        self._average_s[size] = (
            took_s if previous is None else previous + WAIT_ALPHA * (took_s - previous)
        )

    def batch_s(self, size: int) -> float | None:
        """The expected time of a batch of `size` requests, seconds: its own average once such
        a batch has run, else the prediction scaled by the nearest size that has run (or as
        it is, before any), else the nearest size's average scaled in proportion to the
        size. None when nothing is known."""
        if size in self._average_s:
            return self._average_s[size]
        predicted = self._predicted_s(size)
        if not self._average_s:
            return predicted
        nearest = min(self._average_s, key=lambda seen: (abs(seen - size), -seen))
        seen_predicted = self._predicted_s(nearest)
        if predicted is not None and seen_predicted is not None:
            return predicted * self._average_s[nearest] / seen_predicted
        return self._average_s[nearest] * size / nearest

    def _predicted_s(self, size: int) -> float | None:
        if self.predict_s is None:
            return None
        try:
            predicted = self.predict_s(size)
        except Exception:  # an estimate must never fail a request
            logger.exception("predicting a batch of %d failed", size)
            return None
        if predicted is None or not (math.isfinite(predicted) and predicted > 0):
            return None
        return predicted


def expected_wait_ms(
    queued: int,
    max_batch_size: int,
    times: BatchTimes,
    running_size: int = 0,
    running_s: float | None = None,
) -> float:
    """How long a request queued behind `queued` others would wait: queued / max_batch_size
    full batches, plus what is left of the running batch of `running_size` requests if one
    has run for `running_s` seconds, at the times of `times` (0 before any batch ran).

    The running batch counts for what is left of it, not a whole batch: counted whole, a
    queue at 80% load refused requests that would have waited well under the limit."""
    full_s = times.batch_s(max_batch_size)
    if full_s is None:
        return 0.0
    left_s = 0.0
    if running_s is not None and running_size > 0:
        left_s = max(0.0, (times.batch_s(running_size) or 0.0) - running_s)
    return 1000.0 * (queued / max_batch_size * full_s + left_s)


def refusal(
    queued: int,
    config: BatchingConfig,
    times: BatchTimes,
    running_size: int = 0,
    running_s: float | None = None,
) -> str | None:
    """Why a request arriving with `queued` requests waiting is refused (503), or None if it
    is admitted. `times`: how long batches have taken; `running_size` and `running_s`: the
    running batch's size and how long it has run (0 and None if none runs)."""
    if queued >= config.max_queue:
        return f"the model's queue is full ({config.max_queue} requests waiting)"
    if config.max_queue_wait_ms is None or queued < config.max_batch_size:
        return None
    wait_ms = expected_wait_ms(queued, config.max_batch_size, times, running_size, running_s)
    if wait_ms > config.max_queue_wait_ms:
        return (
            f"the model's queue is full: {queued} requests waiting would take "
            f"{wait_ms:.0f} ms, over the limit of {config.max_queue_wait_ms:g} ms"
        )
    return None


def _answer(pending: _Pending[Req, Resp], result: Resp | BaseException) -> None:
    """Resolve the submitter's future, unless it was cancelled (client gone)."""
    if pending.future.done():
        return
    if isinstance(result, BaseException):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)
