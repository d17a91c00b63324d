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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from packrat.controller.admission import (
    QUEUE_FULL_RETRY_AFTER_S,
    Admission,
    BatchTimes,
    expected_wait_ms,
)
from packrat.controller.batching import BatchingConfig
from packrat.server.errors import Unavailable

Req = TypeVar("Req")
Resp = TypeVar("Resp")

logger = logging.getLogger(__name__)


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
    is called with the size of every batch just before it runs; `after_batch` after each
    batch, once its submitters have their answers, on the loop behind them (`call_soon`), so
    the work a batch leaves that no request waits for (metrics, the profile's calibration)
    runs after their responses are on their way. `predict_s(size)`, if given,
    is how long a batch of `size` should take (e.g. by the model's profile; None where it
    cannot say), the first estimate of a batch's time for admission (`BatchTimes`).
    Admission is `packrat.controller.admission`'s rule: a full queue refuses and overloads the
    model, whose queue is then held to `max_queue_wait_ms` of batches until it drains (a batch
    leaves it empty with no request refused meanwhile).

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
        after_batch: Callable[[], None] | None = None,
        predict_s: Callable[[int], float | None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._config = config if config is not None else BatchingConfig()
        self._on_batch = on_batch
        self._after_batch = after_batch
        self._queue: collections.deque[_Pending[Req, Resp]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: list[_Pending[Req, Resp]] = []
        self._running_since: float | None = None  # event-loop time the running batch began
        self._running_waits_s: tuple[float, ...] = ()
        self._admission = Admission(
            self._config.max_batch_size,
            self._config.max_queue,
            self._config.max_queue_wait_ms,
            BatchTimes(predict_s),
        )
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
    def overloaded(self) -> bool:
        """Whether the queue overflowed and has not drained since (see `Admission`)."""
        return self._admission.overloaded

    @property
    def running_waits_s(self) -> tuple[float, ...]:
        """Seconds each request of the batch now running waited in the queue, from its
        arrival to the batch's dispatch (empty while none runs); `run_batch` may read it."""
        return self._running_waits_s

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
        running = self._running_batch()
        refused = self._admission.refusal(len(self._queue), *running)
        if refused is not None:
            self._shed(self._admission.shed(len(self._queue), *running))
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
                batch = [self._queue.popleft() for _ in range(min(size, len(self._queue)))]
                self._admission.dispatched(len(self._queue))
                return batch
            with contextlib.suppress(TimeoutError):  # the deadline passed: re-checked above
                await asyncio.wait_for(self._wakeup.wait(), remaining_s)

    def expected_wait_ms(self) -> float:
        """How long a request queued now would wait: the batches ahead of it (the queued
        requests' and the running one) at the recent batch times (0 before any batch ran)."""
        return expected_wait_ms(
            len(self._queue),
            self._config.max_batch_size,
            self._admission.times,
            *self._running_batch(),
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
        self._running_waits_s = tuple(started - p.enqueued_s for p in batch)
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
        self._running, self._running_since, self._running_waits_s = [], None, ()
        loop = asyncio.get_running_loop()
        self._admission.times.record(len(batch), loop.time() - started)
        if self._after_batch is not None:
            loop.call_soon(self._after_batch)  # behind the submitters' wake-ups

    def _shed(self, count: int) -> None:
        """Answer the last `count` requests waiting with Unavailable, and drop them."""
        if count:
            logger.warning(
                "overloaded: shedding the last %d of %d waiting", count, len(self._queue)
            )
        limit = self._config.max_queue_wait_ms
        for _ in range(count):
            why = f"the model is overloaded: this request would have waited over {limit:g} ms"
            _answer(self._queue.pop(), Unavailable(why, retry_after_s=QUEUE_FULL_RETRY_AFTER_S))

    def _fail_queued(self, reason: str) -> None:
        while self._queue:
            _answer(self._queue.popleft(), Unavailable(reason))


def _answer(pending: _Pending[Req, Resp], result: Resp | BaseException) -> None:
    """Resolve the submitter's future, unless it was cancelled (client gone)."""
    if pending.future.done():
        return
    if isinstance(result, BaseException):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)
