"""best_split: the exact split of a batch among running instances, checked by brute force."""

from __future__ import annotations

import itertools
import math

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from packrat.controller.split_sizes import (
    MemoizedSplit,
    best_split,
    min_latencies,
    proportional_split,
)
from packrat.optimizer.table import LatencyTable


def _table(cells: dict[tuple[int, int], float]) -> LatencyTable:
    return LatencyTable.from_cells(cells)


def _brute_force(table: LatencyTable, threads: list[int], batch: int) -> tuple[float, int] | None:
    """(latency, busy instances) of the best split by enumeration; None if none covers."""
    choices = [
        [0] + [b for b in table.batches if b <= batch and table.get(t, b) is not None]
        for t in threads
    ]
    best: tuple[float, int] | None = None
    for sizes in itertools.product(*choices):
        if sum(sizes) != batch:
            continue
        latencies = [table.get(t, n) for t, n in zip(threads, sizes, strict=True) if n > 0]
        key = (max((ms for ms in latencies if ms is not None), default=0.0), len(latencies))
        if best is None or key < best:
            best = key
    return best


@st.composite
def _cases(draw: st.DrawFn) -> tuple[LatencyTable, list[int], int]:
    profiled_threads = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4, unique=True))
    profiled_batches = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True))
    cells: dict[tuple[int, int], float] = {}
    for t in profiled_threads:
        for b in profiled_batches:
            # Small integer latencies make ties (and so the tie-break) common.
            if draw(st.booleans()) or not cells:
                cells[(t, b)] = float(draw(st.integers(1, 6)))
    threads = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    batch = draw(st.integers(0, 10))
    return _table(cells), threads, batch


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_best_split_matches_brute_force(case: tuple[LatencyTable, list[int], int]) -> None:
    table, threads, batch = case
    sizes, latency_ms = best_split(table, threads, batch)
    assert len(sizes) == len(threads)
    assert sum(sizes) == batch
    assert all(n >= 0 for n in sizes)
    expected = _brute_force(table, threads, batch)
    if expected is None:
        assert latency_ms == math.inf
        assert sizes == proportional_split(threads, batch)
        return
    for t, n in zip(threads, sizes, strict=True):
        assert n == 0 or table.get(t, n) is not None, (t, n)
    got_latency = max((table.get(t, n) or 0.0 for t, n in zip(threads, sizes, strict=True)))
    assert latency_ms == got_latency
    assert (latency_ms, sum(n > 0 for n in sizes)) == expected


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_min_latencies_are_best_splits_latencies_for_every_batch(
    case: tuple[LatencyTable, list[int], int],
) -> None:
    # Instances of equal thread count are combined by doubling: repeat some to exercise it.
    table, threads, batch = case
    threads = threads * 3
    every = min_latencies(table, threads, batch)
    assert every == [best_split(table, threads, b)[1] for b in range(batch + 1)]


def test_splits_evenly_when_that_is_fastest() -> None:
    table = _table({(1, 1): 10.0, (1, 2): 18.0, (1, 4): 40.0, (2, 4): 22.0, (2, 2): 11.0})
    assert best_split(table, [1, 1], 4) == ([2, 2], 18.0)
    assert best_split(table, [2, 1, 1], 4) == ([2, 1, 1], 11.0)


def test_prefers_fewer_busy_instances_at_equal_latency() -> None:
    table = _table({(1, 1): 5.0, (1, 2): 5.0})
    assert best_split(table, [1, 1], 2) == ([2, 0], 5.0)


def test_equal_thread_counts_get_larger_counts_first() -> None:
    table = _table({(1, 1): 5.0, (1, 2): 9.0, (2, 1): 3.0, (2, 2): 4.0})
    sizes, latency_ms = best_split(table, [1, 2, 1], 5)
    assert sizes == [2, 2, 1]
    assert latency_ms == 9.0


def test_batch_zero_is_all_idle() -> None:
    assert best_split(_table({(1, 1): 1.0}), [1, 2], 0) == ([0, 0], 0.0)


def test_uncoverable_batch_falls_back_to_thread_share() -> None:
    table = _table({(1, 2): 5.0, (2, 2): 3.0})
    sizes, latency_ms = best_split(table, [2, 1], 3)  # only even sizes profiled
    assert latency_ms == math.inf
    assert sizes == [2, 1]
    # Thread counts missing from the table can only idle.
    assert best_split(table, [3], 2) == ([2], math.inf)


def test_nan_cells_are_not_profiled() -> None:
    table = LatencyTable((1,), (1, 2), np.array([[2.0, np.nan]]))
    assert best_split(table, [1, 1], 2) == ([1, 1], 2.0)


@pytest.mark.parametrize(
    ("threads", "batch", "expected"),
    [
        ([1, 1], 5, [3, 2]),
        ([2, 1, 1], 4, [2, 1, 1]),
        ([2, 1, 1], 3, [1, 1, 1]),
        ([3, 1], 2, [2, 0]),
        ([1], 7, [7]),
        ([1, 1, 1], 0, [0, 0, 0]),
    ],
)
def test_proportional_split(threads: list[int], batch: int, expected: list[int]) -> None:
    assert proportional_split(threads, batch) == expected


def test_rejects_bad_arguments() -> None:
    table = _table({(1, 1): 1.0})
    with pytest.raises(ValueError, match="at least one instance"):
        best_split(table, [], 1)
    with pytest.raises(ValueError, match="thread counts"):
        best_split(table, [0], 1)
    with pytest.raises(ValueError, match="batch must be >= 0"):
        proportional_split([1], -1)


def test_the_memoized_split_is_the_split_or_the_thread_share_without_a_profile() -> None:
    table = LatencyTable.from_cells({(1, 1): 10.0, (1, 2): 12.0, (2, 1): 6.0, (2, 2): 9.0})
    memo = MemoizedSplit(table)
    first = memo.split([1, 1], 2)
    assert first == best_split(table, [1, 1], 2) and memo.split((1, 1), 2) is first
    assert memo.split([2], 2) == best_split(table, [2], 2)
    sizes, latency_ms = MemoizedSplit(None).split([2, 1], 3)
    assert sizes == proportional_split([2, 1], 3) and math.isnan(latency_ms)
