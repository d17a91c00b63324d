"""Admission, the pure rule the batcher and the simulator share: batch times per size, the
expected wait, a full queue, and an overloaded queue held to the wait limit until it drains."""

from __future__ import annotations

import pytest

from packrat.controller.admission import Admission, BatchTimes, expected_wait_ms


def _times(**by_size: float) -> BatchTimes:
    """Batch times recorded once each, e.g. _times(b1=0.15, b8=1.15)."""
    times = BatchTimes()
    for key, took_s in by_size.items():
        times.record(int(key.removeprefix("b")), took_s)
    return times


def _overloaded(times: BatchTimes, limit_ms: float = 2000.0) -> Admission:
    """Batches of 8, a queue of at most 100, already overloaded."""
    admission = Admission(8, 100, limit_ms, times)
    assert admission.refusal(100) is not None and admission.overloaded
    return admission


def test_the_expected_wait_counts_what_is_left_of_the_running_batch() -> None:
    times = _times(b8=1.0)
    assert expected_wait_ms(8, 8, times) == pytest.approx(1000.0)  # none running
    assert expected_wait_ms(8, 8, times, 8, running_s=0.25) == pytest.approx(1750.0)
    assert expected_wait_ms(8, 8, times, 8, running_s=5.0) == pytest.approx(1000.0)
    assert expected_wait_ms(50, 8, BatchTimes()) == 0.0  # nothing measured yet
    # bert-base in the soak: 0.86 s batches, 11 waiting. Half-way through the running batch
    # that is 1.6 s, admitted; counting the running batch whole (2.0 s) refused it.
    admission = _overloaded(_times(b8=0.86))
    assert admission.refusal(11, 8, running_s=0.43) is None
    assert "would take 2042 ms" in str(admission.refusal(11, 8, running_s=0.0))
    slow = _overloaded(_times(b8=100.0))
    assert slow.refusal(7, 8, running_s=0.0) is None  # a full batch's worth always


def test_only_a_full_queue_refuses_until_the_model_is_overloaded() -> None:
    """A closed loop of up to max_queue clients never overflows the queue: however long the
    batches, nothing but a full queue refuses, and that refusal overloads the model."""
    admission = Admission(8, 100, 2000.0, _times(b8=60.0))  # a minute a batch
    assert admission.refusal(99, 8, running_s=0.0) is None
    assert not admission.overloaded and admission.shed(99) == 0
    assert "queue is full (100 requests waiting)" in str(admission.refusal(100))
    assert admission.overloaded
    assert "overloaded: 8 requests waiting would take" in str(admission.refusal(8))
    admission.dispatched(0)  # the queue emptied, but requests were refused meanwhile
    assert admission.overloaded
    admission.dispatched(0)  # emptied again, nothing refused since the last batch
    assert not admission.overloaded and admission.refusal(99) is None


def test_a_flood_shed_to_one_batch_stays_overloaded_while_it_lasts() -> None:
    """A flood's queue is shed to a batch or so, which the next dispatch takes whole: the
    queue is empty, but the arrivals still outrun the batches. Leaving the overloaded state
    there let the queue refill to max_queue at every batch (p50 20 s in the flood)."""
    admission = _overloaded(_times(b8=1.4))
    for _ in range(5):  # every batch: the queue is held to ~1 batch, the rest refused
        assert admission.shed(100, 8, running_s=0.0) == 100 - 8
        assert admission.refusal(8, 8, running_s=0.0) is not None
        admission.dispatched(0)
        assert admission.overloaded
    admission.dispatched(0)  # the flood is over: a batch with no refusal meanwhile
    assert not admission.overloaded
    admission.refusal(100)
    admission.dispatched(3)  # a queue left behind: not drained, whatever was refused
    admission.dispatched(3)
    assert admission.overloaded


def test_an_overloaded_queue_sheds_what_would_wait_past_the_limit() -> None:
    """At a flood's onset 100 requests wait (a closed loop's burst looks the same); the
    overflow that follows sheds those behind the first 2 s of batches, from the back."""
    admission = _overloaded(_times(b8=0.5))  # 16 waiting: 1 s; 32: 2 s; 33: 2.06 s
    assert admission.shed(100) == 100 - 33  # the 33rd waits behind 32: exactly 2 s, kept
    assert admission.shed(33) == 0
    assert admission.shed(100, 8, running_s=0.0) == 100 - 25  # + 0.5 s left of a batch
    assert admission.shed(5) == 0  # never below a full batch's worth
    unlimited = Admission(8, 100, 0.0, _times(b8=0.5))  # 0: the queue is not held
    assert unlimited.refusal(100) is not None and unlimited.overloaded
    assert unlimited.shed(99) == 0 and unlimited.refusal(99) is None


def test_batch_times_are_kept_per_size_and_scaled_from_the_nearest() -> None:
    times = BatchTimes()
    assert times.batch_s(8) is None
    times.record(1, 0.15)
    assert times.batch_s(1) == pytest.approx(0.15)
    assert times.batch_s(8) == pytest.approx(1.2)  # no batch of 8 yet: 8 x a batch of 1
    times.record(4, 0.6)
    times.record(4, 1.0)  # a running average: 0.6 + 0.25 x (1.0 - 0.6)
    assert times.batch_s(4) == pytest.approx(0.7)
    assert times.batch_s(8) == pytest.approx(1.4)  # from 4, the nearest
    assert times.batch_s(2) == pytest.approx(0.3)  # from 1, the nearest
    times.record(8, 1.1)
    assert times.batch_s(8) == pytest.approx(1.1)  # its own, once one has run


def test_a_prediction_shapes_the_estimate_of_sizes_not_run_yet() -> None:
    """With the profile's prediction (here 30 ms + 25 ms a request) a full batch is costed at
    its predicted time before any batch ran, then scaled by how the nearest size that ran
    compared with its own prediction (the serving overhead the profile does not time)."""
    predicted = {b: 0.030 + 0.025 * b for b in range(1, 9)}
    times = BatchTimes(predicted.get)
    assert times.batch_s(8) == pytest.approx(0.230)
    times.record(1, 0.066)  # 20% over its prediction of 55 ms
    assert times.batch_s(8) == pytest.approx(0.230 * 1.2)  # not 8 x 66 ms = 528 ms
    times.record(4, 0.130)  # exactly its prediction, and nearer to 8 than 1 is
    assert times.batch_s(8) == pytest.approx(0.230)
    assert times.batch_s(2) == pytest.approx(0.080 * 1.2)  # 1 is the nearest to 2
    assert BatchTimes(lambda size: None).batch_s(8) is None  # no prediction: as without one
    failing = BatchTimes(lambda size: 1 / 0)
    failing.record(1, 0.1)
    assert failing.batch_s(8) == pytest.approx(0.8)  # a failing prediction is ignored


def test_a_flood_after_single_requests_is_costed_at_full_batches() -> None:
    """At a flood's onset only batches of 1 have run (bert-base on 2 cores: 0.15 s each). A
    queue of full batches ahead of a new request takes ~1.2 s a batch, not 0.15 s: past ~2 s
    of waiting an overloaded model refuses, not only once the queue is full again."""
    admission = _overloaded(_times(b1=0.15))
    assert admission.refusal(13, 1, running_s=0.12) is None  # 13 / 8 x 1.2 s + 0.03 s
    assert "would take 2130 ms" in str(admission.refusal(14, 1, running_s=0.12))
