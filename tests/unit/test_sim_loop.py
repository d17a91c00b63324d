"""The simulator's batching, event for event as the server's batcher: latencies by hand."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from packrat.controller.batching import BatchingConfig
from packrat.optimizer.table import LatencyTable
from packrat.sim import SimConfig, SimResult, Timing, bursts, poisson_load, simulate_profile
from packrat.workload.schedule import OpenLoop, Phase

# Two cores; with these latencies (ms) the optimal plans are <1,2,1> for a batch of 1 and
# <2,1,4> for a batch of 8, and the fat instance is <1,2,8>. Shares run whole (chunks would
# run the fat instance's 8 as chunks of 2, 180 ms: test_sim_policy covers chunks), so the
# latencies below are the cells'.
CELLS = {
    (1, 1): 50.0, (1, 2): 70.0, (1, 4): 120.0, (1, 8): 230.0,
    (2, 1): 30.0, (2, 2): 45.0, (2, 4): 100.0, (2, 8): 200.0,
}  # fmt: skip
TABLE = LatencyTable.from_cells(CELLS)
TIMING = Timing(overhead_ms=1.0, switch_ms=1.0)


def _load(*times_s: float, end_s: float | None = None) -> OpenLoop:
    end = end_s if end_s is not None else max(times_s) + 1.0
    return OpenLoop(np.array(times_s), (Phase("hand", 0.0, end),))


def _run(
    load: OpenLoop, policy: str = "fat", timing: Timing = TIMING, **batching: float
) -> SimResult:
    settings_ = {"max_batch_size": 8, "max_batch_delay_ms": 5.0, **batching}
    config = SimConfig(
        cores=2,
        policy=policy,
        batching=BatchingConfig(**settings_),  # type: ignore[arg-type]
        timing=timing,
        chunks=False,
    )
    return simulate_profile(TABLE, config, load)


def test_a_lone_request_waits_the_delay_then_runs_its_cell() -> None:
    result = _run(_load(1.0))
    # 5 ms batch delay + L(2, 1) on the fat instance + 1 ms overhead
    assert result.latencies_ms == pytest.approx([5.0 + 30.0 + 1.0])
    assert result.batch_sizes.tolist() == [1]


def test_next_batch_gathers_while_one_runs_and_leaves_at_once_if_its_delay_passed() -> None:
    # A at 0: dispatched at 5 ms, ends at 36. B at 10: its deadline (15) passed when A ends,
    # so it leaves at 36 and ends at 67. C at 40: arrives after B left, waits for B (67).
    result = _run(_load(0.0, 0.010, 0.040))
    assert result.done_s * 1000 == pytest.approx([36.0, 67.0, 98.0])
    assert result.latencies_ms == pytest.approx([36.0, 57.0, 58.0])


def test_a_full_batch_leaves_without_waiting_for_the_delay() -> None:
    result = _run(_load(*[0.0] * 8), max_batch_delay_ms=1000.0)
    assert result.latencies_ms == pytest.approx([200.0 + 1.0] * 8)  # L(2, 8) + overhead


def test_under_a_flood_every_batch_is_full_and_served_in_fifo_order() -> None:
    result = _run(bursts(size=80, count=1, period_s=100.0))
    assert result.batch_sizes.tolist() == [8] * 10
    ends = (np.arange(10) + 1) * 201.0  # back to back, L(2, 8) + 1 ms each
    assert result.done_s * 1000 == pytest.approx(np.repeat(ends, 8))


def test_requests_past_max_queue_are_refused() -> None:
    result = _run(bursts(size=200, count=1, period_s=100.0), max_queue=100, max_queue_wait_ms=0)
    overall = result.overall()
    assert (overall.served, overall.refused) == (100, 100)
    assert np.isnan(result.done_s[100:]).all()  # the last to arrive are the ones refused


def test_an_overflow_holds_the_queue_to_the_wait_limit_until_it_drains() -> None:
    # The first batch (1 request) takes 31 ms against the profile's L(2, 1) = 30 (1 ms of
    # overhead), so until a full batch has run one is expected to take L(2, 8) x 31 / 30 =
    # 206.7 ms. A burst of 30 at 1 s: 20 are admitted (no bound before the queue overflows),
    # the 21st is refused and overloads the model, which sheds the last 4 waiting (the 16th
    # waits behind 15 x 206.7 / 8 = 387.5 ms <= 400, the 17th behind 413.3) and refuses the
    # other 9 as well. The second batch of 8 empties the queue: a burst of 20 at 3 s is then
    # admitted whole.
    load = _load(0.0, *[1.0] * 30, *[3.0] * 20)
    result = _run(load, max_queue=20, max_queue_wait_ms=400.0)
    assert result.overall().refused == 4 + 1 + 9
    assert np.isnan(result.done_s[17:31]).all() and not np.isnan(result.done_s[31:]).any()
    assert result.batch_sizes.tolist() == [1, 8, 8, 8, 8, 4]
    assert _run(load, max_queue=20, max_queue_wait_ms=0).overall().refused == 10  # not held
    assert _run(load).overall().refused == 0  # the default queue of 100 never overflows


@pytest.mark.parametrize(("burst_s", "admitted"), [(1.030, 15), (1.010, 14)])
def test_a_running_batch_counts_for_what_is_left_of_it(burst_s: float, admitted: int) -> None:
    # A lone request at 1.0 runs from 1.005 to 1.036 (31 ms, as the first). A burst of 20 at
    # 1.030 overflows the queue of 16 and finds 6 ms of the running batch left: the 15th
    # waiting is behind 14 / 8 x 206.7 + 6 = 367.7 ms <= 380, the 16th behind 393.5, so 1 is
    # shed. At 1.010, 26 ms are left: the 15th waits 387.7 ms, and 2 are shed.
    load = _load(0.0, 1.0, *[burst_s] * 20)
    result = _run(load, max_queue=16, max_queue_wait_ms=380.0)
    assert result.overall().refused == 20 - admitted


def test_zero_delay_dispatches_whatever_waits() -> None:
    result = _run(_load(0.0, 0.001), max_batch_delay_ms=0.0)
    assert result.batch_sizes.tolist() == [1, 1]
    assert result.done_s * 1000 == pytest.approx([31.0, 62.0])


def test_overhead_is_added_to_every_batch() -> None:
    quiet = _run(_load(0.0), timing=Timing(overhead_ms=0.0, switch_ms=1.0))
    assert quiet.latencies_ms == pytest.approx([35.0])


def test_same_seed_same_result_and_noise_depends_on_it() -> None:
    noisy = Timing(overhead_ms=1.0, switch_ms=1.0, noise_cv=0.2)
    load = poisson_load(rate_rps=20.0, duration_s=30.0, seed=3)
    first = _run(load, policy="auto", timing=noisy)
    again = _run(load, policy="auto", timing=noisy)
    assert np.array_equal(first.done_s, again.done_s)
    other = simulate_profile(
        TABLE,
        SimConfig(cores=2, policy="auto", timing=noisy, seed=4),
        load,
    )
    assert not np.array_equal(first.done_s, other.done_s)
    quiet = _run(load, policy="auto")
    assert not np.array_equal(first.done_s, quiet.done_s)


def test_throughput_and_counts_add_up() -> None:
    result = _run(poisson_load(rate_rps=10.0, duration_s=60.0, seed=1))
    overall = result.overall()
    assert overall.requests == result.load.num_requests
    assert overall.served + overall.refused == overall.requests
    assert overall.throughput_rps == pytest.approx(overall.served / result.end_s)
    assert int(result.batch_sizes.sum()) == overall.served
    assert result.to_json()["overall"]["served"] == overall.served


@settings(max_examples=60, deadline=None)
@given(
    gaps_ms=st.lists(st.floats(0.0, 300.0), min_size=1, max_size=60),
    max_batch_size=st.integers(1, 8),
    delay_ms=st.sampled_from([0.0, 5.0, 50.0]),
    max_queue=st.integers(1, 30),
    policy=st.sampled_from(["fat", "auto", "follow", "fixed", "single", "<2,1,4>"]),
)
def test_any_load_is_served_fifo_within_the_batcher_limits(
    gaps_ms: list[float], max_batch_size: int, delay_ms: float, max_queue: int, policy: str
) -> None:
    times = np.cumsum(np.asarray(gaps_ms)) / 1000.0
    result = _run(
        _load(*times),
        policy=policy,
        max_batch_size=max_batch_size,
        max_batch_delay_ms=delay_ms,
        max_queue=max_queue,
        max_queue_wait_ms=1e9,  # only max_queue refuses
    )
    served = result.served_mask
    assert int(result.batch_sizes.sum()) == int(served.sum())
    assert (result.batch_sizes >= 1).all() and (result.batch_sizes <= max_batch_size).all()
    ends = result.done_s[served]
    assert (np.diff(ends) >= 0).all()  # first in, first out
    # no request is answered sooner than the fastest cell plus the overhead
    assert (result.latencies_ms >= min(CELLS.values()) + 1.0 - 1e-9).all()
    if max_queue >= len(times):
        assert served.all()  # the queue never fills
