"""Splitting a batch among a plan's instances."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packrat.pool.split import batch_slices, split_sizes
from packrat.types import InstanceSpec, Plan


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=32))
def test_slices_partition_the_batch_in_order(sizes: list[int]) -> None:
    slices = batch_slices(sizes)
    covered = [i for part in slices for i in range(sum(sizes))[part]]
    assert covered == list(range(sum(sizes)))
    assert [part.stop - part.start for part in slices] == sizes


def test_split_sizes_follows_plan_order() -> None:
    plan = Plan(
        cores=4,
        batch=7,
        latency_ms=1.0,
        instances=(InstanceSpec(2, 4), InstanceSpec(1, 2), InstanceSpec(1, 1)),
    )
    assert split_sizes(plan) == [slice(0, 4), slice(4, 6), slice(6, 7)]


def test_rejects_empty_sub_batches() -> None:
    with pytest.raises(ValueError, match="batch sizes"):
        batch_slices([2, 0])
