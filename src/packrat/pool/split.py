"""Splitting a batch of requests among a plan's instances, and merging their outputs back.

Instance i of a plan serves the i-th consecutive run of `instances[i].batch` requests, so
outputs concatenated in instance order are in request order.
"""

from __future__ import annotations

from collections.abc import Sequence

from packrat.types import Plan


def batch_slices(sizes: Sequence[int], *, allow_empty: bool = False) -> list[slice]:
    """Consecutive slices of lengths `sizes` that partition range(sum(sizes)), in order.

    Sizes must be >= 1, or >= 0 with `allow_empty` (an empty slice for an idle instance).
    """
    slices: list[slice] = []
    start = 0
    least = 0 if allow_empty else 1
    for size in sizes:
        if size < least:
            raise ValueError(f"batch sizes must be >= {least}, got {list(sizes)}")
        slices.append(slice(start, start + size))
        start += size
    return slices


def split_sizes(plan: Plan) -> list[slice]:
    """The slice of a `plan.batch`-request batch that each instance of `plan` serves."""
    return batch_slices([instance.batch for instance in plan.instances])
