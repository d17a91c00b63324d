"""The dynamic batcher, with a fake async run_batch: formation, ordering, errors, shutdown."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from packrat.controller.admission import QUEUE_FULL_RETRY_AFTER_S
from packrat.controller.batching import BATCHING_KEYS, BatchingConfig, without_batching
from packrat.server.batcher import Batcher
from packrat.server.errors import Unavailable

T = TypeVar("T")

LONG_MS = 10_000.0  # a delay no test waits for: batches must form by size or by stop


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a test's coroutine, failing it after 10 s instead of hanging."""
    return asyncio.run(asyncio.wait_for(main(), timeout=10))


class FakeModel:
    """run_batch that doubles each request, records batches, optionally sleeps or blocks."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.sleep_s = sleep_s
        self.running = 0
        self.most_running = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, requests: list[int]) -> list[int | BaseException]:
        self.batches.append(list(requests))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.sleep_s:
                await asyncio.sleep(self.sleep_s)
            return [ValueError(f"bad {r}") if r < 0 else 2 * r for r in requests]
        finally:
            self.running -= 1


def _batcher(model: FakeModel, **config: float) -> Batcher[int, int]:
    return Batcher(model, BatchingConfig(**config))  # type: ignore[arg-type]


async def _wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def test_batches_form_at_max_size() -> None:
    async def main() -> None:
        model = FakeModel()
        sizes: list[int] = []
        batcher = Batcher(model, BatchingConfig(4, LONG_MS), on_batch=sizes.append)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
        assert results == [2 * i for i in range(8)]
        assert model.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
        assert sizes == [4, 4]
        await batcher.stop()

    run(main)


def test_partial_batch_runs_after_the_delay() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = _batcher(model, max_batch_size=100, max_batch_delay_ms=20)
        await batcher.start()
        started = time.monotonic()
        assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == [0, 2, 4]
        assert time.monotonic() - started >= 0.015
        assert model.batches == [[0, 1, 2]]
        await asyncio.sleep(0.05)  # past the delay: the next request starts a new batch
        assert await batcher.submit(7) == 14
        assert model.batches == [[0, 1, 2], [7]]
        await batcher.stop()

    run(main)


def test_by_default_a_batch_leaves_when_the_model_is_free_with_what_is_queued() -> None:
    """No delay by default: a lone request runs at once (its batch starts before any other
    request arrives), and the requests that queued while it ran go together in the next."""

    async def main() -> None:
        model = FakeModel()
        model.gate = asyncio.Event()
        batcher = Batcher(model, BatchingConfig(max_batch_size=8))
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(1))
        for _ in range(5):  # a few turns of the loop, no time: a delay would hold it back
            await asyncio.sleep(0)
        assert model.batches == [[1]]
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
        await _wait_until(lambda: batcher.queue_depth == 3)
        model.gate.set()
        assert await asyncio.gather(first, *queued) == [2, 4, 6, 8]
        assert model.batches == [[1], [2, 3, 4]]
        await batcher.stop()

    run(main)


def test_delay_counts_from_the_first_request_of_the_batch() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = _batcher(model, max_batch_size=100, max_batch_delay_ms=60)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.04)
        second = asyncio.ensure_future(batcher.submit(2))
        await first
        await second  # it joined the first request's batch, which left ~60 ms after it
        assert model.batches == [[1, 2]]
        await batcher.stop()

    run(main)


def test_one_batch_at_a_time_and_overdue_requests_go_next() -> None:
    async def main() -> None:
        model = FakeModel(sleep_s=0.05)
        batcher = _batcher(model, max_batch_size=8, max_batch_delay_ms=0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        await _wait_until(lambda: model.running == 1)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
        await _wait_until(lambda: batcher.queue_depth == 5)
        assert batcher.in_flight == 1
        assert await first == 0
        assert await asyncio.gather(*rest) == [2, 4, 6, 8, 10]
        assert model.batches == [[0], [1, 2, 3, 4, 5]]
        assert model.most_running == 1
        await batcher.stop()

    run(main)


@settings(max_examples=25, deadline=None)
@given(
    requests=st.lists(st.integers(-5, 1000), min_size=1, max_size=60),
    max_batch_size=st.integers(1, 9),
    delay_ms=st.sampled_from([0.0, 1.0, 3.0]),
    seed=st.integers(0, 1000),
)
def test_every_request_gets_its_own_answer(
    requests: list[int], max_batch_size: int, delay_ms: float, seed: int
) -> None:
    rng = random.Random(seed)

    async def client(batcher: Batcher[int, int], request: int) -> object:
        await asyncio.sleep(rng.random() * 0.003)
        try:
            return await batcher.submit(request)
        except ValueError as exc:
            return str(exc)

    async def main() -> None:
        model = FakeModel(sleep_s=0.001)
        batcher = _batcher(model, max_batch_size=max_batch_size, max_batch_delay_ms=delay_ms)
        await batcher.start()
        answers = await asyncio.gather(*(client(batcher, r) for r in requests))
        assert answers == [f"bad {r}" if r < 0 else 2 * r for r in requests]
        assert all(1 <= len(b) <= max_batch_size for b in model.batches)
        assert sorted(r for b in model.batches for r in b) == sorted(requests)
        assert model.most_running == 1
        await batcher.stop()

    run(main)


def test_per_request_errors_fail_only_their_request() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = _batcher(model, max_batch_size=3, max_batch_delay_ms=LONG_MS)
        await batcher.start()
        submits = (batcher.submit(r) for r in (1, -2, 3))
        results = await asyncio.gather(*submits, return_exceptions=True)
        assert results[0] == 2 and results[2] == 6
        assert isinstance(results[1], ValueError) and str(results[1]) == "bad -2"
        assert model.batches == [[1, -2, 3]]
        await batcher.stop()

    run(main)


def test_a_failing_run_batch_fails_its_batch_and_the_loop_goes_on() -> None:
    async def main() -> None:
        calls = 0

        async def flaky(requests: list[int]) -> list[int | BaseException]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("pool exploded")
            if calls == 2:
                return [1]  # wrong count: a bug, reported to every request
            return [2 * r for r in requests]

        batcher: Batcher[int, int] = Batcher(flaky, BatchingConfig(2, LONG_MS))
        await batcher.start()
        first = await asyncio.gather(*(batcher.submit(r) for r in (1, 2)), return_exceptions=True)
        assert [str(e) for e in first] == ["pool exploded"] * 2
        second = await asyncio.gather(*(batcher.submit(r) for r in (1, 2)), return_exceptions=True)
        assert all(isinstance(e, RuntimeError) and "2 requests" in str(e) for e in second)
        assert await asyncio.gather(batcher.submit(5), batcher.submit(6)) == [10, 12]
        await batcher.stop()

    run(main)


def test_full_queue_refuses_with_unavailable() -> None:
    async def main() -> None:
        model = FakeModel()
        model.gate = asyncio.Event()
        batcher = _batcher(model, max_batch_size=1, max_batch_delay_ms=0, max_queue=2)
        await batcher.start()
        running = asyncio.ensure_future(batcher.submit(0))
        await _wait_until(lambda: model.running == 1)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        await _wait_until(lambda: batcher.queue_depth == 2)
        with pytest.raises(Unavailable, match="queue is full") as refused:
            await batcher.submit(3)
        assert refused.value.retry_after_s == QUEUE_FULL_RETRY_AFTER_S
        model.gate.set()
        assert await running == 0
        assert await asyncio.gather(*queued) == [2, 4]
        await batcher.stop()

    run(main)


def test_stop_drains_queued_and_running_requests() -> None:
    async def main() -> None:
        model = FakeModel(sleep_s=0.02)
        batcher = _batcher(model, max_batch_size=2, max_batch_delay_ms=LONG_MS)
        await batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await _wait_until(lambda: model.running == 1)
        await batcher.stop(drain=True)
        assert [t.result() for t in tasks] == [0, 2, 4, 6, 8]
        # The odd one out did not wait LONG_MS: stopping dispatches at once.
        assert model.batches == [[0, 1], [2, 3], [4]]
        with pytest.raises(Unavailable):
            await batcher.submit(1)
        assert not batcher.accepting

    run(main)


def test_stop_without_drain_fails_waiting_requests() -> None:
    async def main() -> None:
        model = FakeModel()
        model.gate = asyncio.Event()
        batcher = _batcher(model, max_batch_size=1, max_batch_delay_ms=0)
        await batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await _wait_until(lambda: model.running == 1 and batcher.queue_depth == 2)
        await batcher.stop(drain=False)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, Unavailable) for r in results)
        assert model.batches == [[0]]

    run(main)


def test_cancelled_requests_do_not_break_the_batch() -> None:
    async def main() -> None:
        model = FakeModel()
        model.gate = asyncio.Event()
        batcher = _batcher(model, max_batch_size=3, max_batch_delay_ms=LONG_MS)
        await batcher.start()
        # Running batch: one of its clients goes away; the others still get answers.
        running = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 3)]
        await _wait_until(lambda: model.running == 1)
        running[1].cancel()
        # Queued request: its client goes away before dispatch; it never reaches the model.
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (4, 5, 6)]
        await _wait_until(lambda: batcher.queue_depth == 3)
        queued[0].cancel()
        await _wait_until(lambda: batcher.queue_depth == 2)
        late = asyncio.ensure_future(batcher.submit(7))
        model.gate.set()
        assert await running[0] == 2 and await running[2] == 6
        assert running[1].cancelled()
        assert await asyncio.gather(*queued[1:], late) == [10, 12, 14]
        assert model.batches == [[1, 2, 3], [5, 6, 7]]
        await batcher.stop()

    run(main)


def test_a_loop_that_dies_answers_every_request_and_takes_no_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in the loop outside run_batch (here _next_batch raises once the first batch
    runs): the running batch finishes, every queued request gets 503 at once, later
    submits are refused, and the failure is logged with its traceback."""

    async def main() -> None:
        model = FakeModel()
        model.gate = asyncio.Event()
        batcher = _batcher(model, max_batch_size=2, max_batch_delay_ms=LONG_MS)
        next_batch = batcher._next_batch
        calls = 0

        async def buggy_next_batch() -> Any:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise RuntimeError("a bug in the loop")
            return await next_batch()

        batcher._next_batch = buggy_next_batch  # type: ignore[method-assign]
        await batcher.start()
        running = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        await _wait_until(lambda: model.running == 1)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(3, 8)]
        await _wait_until(lambda: batcher.queue_depth == 5)
        model.gate.set()
        assert await asyncio.gather(*running) == [2, 4]
        results = await asyncio.gather(*queued, return_exceptions=True)
        for result in results:
            assert isinstance(result, Unavailable)
            assert str(result) == "the model's batch loop failed (RuntimeError: a bug in the loop)"
        assert batcher.failure == "RuntimeError: a bug in the loop"
        assert not batcher.accepting and batcher.queue_depth == 0 and batcher.in_flight == 0
        with pytest.raises(Unavailable, match=r"batch loop failed \(RuntimeError"):
            await batcher.submit(9)
        await batcher.stop()  # a failed batcher still stops cleanly
        assert model.batches == [[1, 2]]

    with caplog.at_level(logging.ERROR, logger="packrat.server.batcher"):
        run(main)
    (record,) = [r for r in caplog.records if "batch loop failed" in r.getMessage()]
    assert record.exc_info is not None and "a bug in the loop" in str(record.exc_info[1])


def test_a_loop_cancelled_from_inside_run_batch_answers_every_request() -> None:
    """run_batch raising CancelledError (not a stop) ends the loop task: the running batch
    and the queue get 503, and later submits are refused instead of waiting for ever."""

    async def main() -> None:
        gate = asyncio.Event()

        async def cancelled(requests: list[int]) -> list[int | BaseException]:
            await gate.wait()
            raise asyncio.CancelledError

        batcher: Batcher[int, int] = Batcher(cancelled, BatchingConfig(2, LONG_MS))
        await batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await _wait_until(lambda: batcher.in_flight == 2 and batcher.queue_depth == 3)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, Unavailable) and "batch loop failed" in str(r) for r in results)
        assert batcher.failure == "it was cancelled" and not batcher.accepting
        with pytest.raises(Unavailable, match="batch loop failed"):
            await batcher.submit(9)
        await batcher.stop()

    run(main)


def test_submit_before_start_is_unavailable() -> None:
    async def main() -> None:
        batcher = _batcher(FakeModel())
        with pytest.raises(Unavailable, match="not started"):
            await batcher.submit(1)
        await batcher.stop()

    run(main)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_batch_size", 0),
        ("max_batch_size", 2.5),
        ("max_batch_delay_ms", -1.0),
        ("max_batch_delay_ms", float("inf")),
        ("max_queue", 0),
        ("max_queue_wait_ms", -1.0),
        ("max_queue_wait_ms", True),
    ],
)
def test_config_errors_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"BatchingConfig.{field}"):
        BatchingConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^ModelConfig.{field} must be"):
        BatchingConfig().with_flat({field: value}, "ModelConfig")
    with pytest.raises(ValueError, match=f"^{field} must be"):
        BatchingConfig().with_flat({field: value}, owner="")


def test_flat_keys_make_a_batching_config_over_a_base() -> None:
    assert BATCHING_KEYS == (
        "max_batch_size",
        "max_batch_delay_ms",
        "max_queue",
        "max_queue_wait_ms",
    )
    base = BatchingConfig(max_batch_size=16, max_queue=50)
    flat = {"max_batch_delay_ms": 5, "port": 8080}  # other keys are not read
    assert base.with_flat(flat) == BatchingConfig(16, 5.0, 50)
    assert base.with_flat({}) == base
    assert without_batching({"max_queue": 1, "port": 8080}) == {"port": 8080}


def test_a_closed_loop_of_max_queue_clients_is_never_refused() -> None:
    """max_queue clients, each sending its next request when the last is answered, on batches
    of 0.25 s: the queue holds up to 92 requests, 2.9 s of batches, but never overflows. They
    all get answers (a 2 s bound on the wait, applied always, refused the second round's)."""

    async def main() -> None:
        model = FakeModel(sleep_s=0.25)
        config = BatchingConfig(max_batch_size=8, max_batch_delay_ms=5.0)
        batcher = Batcher(model, config)
        await batcher.start()

        async def client(k: int) -> list[int]:
            return [await batcher.submit(k), await batcher.submit(k)]

        answers = await asyncio.gather(*(client(k) for k in range(config.max_queue)))
        assert answers == [[2 * k, 2 * k] for k in range(config.max_queue)]
        await batcher.stop()

    run(main)


def test_an_overflowing_queue_is_held_to_the_wait_limit_until_it_drains() -> None:
    """Batches of 2 that take ~1 s, a queue of at most 6: 6 waiting are admitted (no bound
    before the queue overflows). The 7th is refused, which overloads the model: the 3 at the
    back of the queue, which would wait over 2.2 s, are shed at once, and a new request is
    refused while the batches ahead would take over 2.2 s. Once a batch empties the queue,
    the model takes requests up to max_queue again."""

    async def main() -> None:
        model = FakeModel(sleep_s=1.0)
        config = BatchingConfig(
            max_batch_size=2, max_batch_delay_ms=0, max_queue=6, max_queue_wait_ms=2200
        )
        batcher = Batcher(model, config)
        await batcher.start()
        # One full batch ran: ~1 s each from now on.
        assert await asyncio.gather(batcher.submit(1), batcher.submit(2)) == [2, 4]
        model.gate = asyncio.Event()
        running = [asyncio.ensure_future(batcher.submit(i)) for i in (3, 4)]
        await _wait_until(lambda: batcher.in_flight == 2)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(5, 11)]
        await _wait_until(lambda: batcher.queue_depth == 6)  # 3 s of batches, admitted
        assert not batcher.overloaded
        with pytest.raises(Unavailable, match="queue is full") as refused:
            await batcher.submit(11)
        assert refused.value.retry_after_s == QUEUE_FULL_RETRY_AFTER_S
        # Overloaded: 2 queued take 1 batch plus ~1 s left of the running one, ~2 s <= 2.2 s;
        # 3 or more would wait ~2.5 s: the last 3 waiting are shed.
        assert batcher.overloaded and batcher.queue_depth == 3
        shed = await asyncio.gather(*queued[3:], return_exceptions=True)
        assert all(isinstance(e, Unavailable) and "overloaded" in str(e) for e in shed)
        with pytest.raises(Unavailable, match="overloaded: 3 requests waiting would take"):
            await batcher.submit(12)
        model.gate.set()
        model.sleep_s = 0.0
        assert await asyncio.gather(*running, *queued[:3]) == [6, 8, 10, 12, 14]
        assert not batcher.overloaded  # the queue drained
        assert await asyncio.gather(*(batcher.submit(i) for i in range(6))) == [0, 2, 4, 6, 8, 10]
        await batcher.stop()

    run(main)


def test_after_batch_runs_once_per_batch_behind_its_submitters() -> None:
    """The work a batch leaves (metrics, calibration) waits until its submitters ran on."""

    async def main() -> list[str]:
        events: list[str] = []
        model = FakeModel()
        batcher = Batcher(
            model,  # type: ignore[arg-type]
            BatchingConfig(max_batch_size=2),
            after_batch=lambda: events.append("after"),
        )
        await batcher.start()

        async def client(request: int) -> None:
            await batcher.submit(request)
            events.append(f"answered {request}")  # runs as soon as the client resumes

        await asyncio.gather(client(1), client(2))
        await _wait_until(lambda: "after" in events)
        await client(3)
        await _wait_until(lambda: events.count("after") == 2)
        await batcher.stop()
        return events

    assert run(main) == ["answered 1", "answered 2", "after", "answered 3", "after"]
