"""For the scripts that interleave rounds against the machine's drift: the order of each
round, and one more pass of a profile."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from packrat.models.base import ModelSource
from packrat.profiler.profile_file import Profile, load_profile
from packrat.profiler.sweep import SweepConfig, profile_model
from packrat.stats import SamplingPolicy

T = TypeVar("T")


def profile_pass(
    source: ModelSource,
    path: Path,
    cores: int,
    batches: Sequence[int],
    done: int,
    of: int,
    *,
    contention: bool = False,
) -> Profile:
    """Profile file `path` of `source` with `done` passes of every cell (resumed: the passes it
    lacks), each with a 1 / `of` share of `packrat profile`'s default sampling budget, as
    `packrat profile --passes OF` would sample them; the whole grid is measured."""
    config = SweepConfig(
        cores=cores,
        batches=tuple(batches),
        policy=SamplingPolicy().per_pass(of),
        contention=contention,
        passes=done,
    )
    existing = load_profile(path) if path.exists() else None
    return profile_model(source, config, out=path, existing=existing)


def rotated(items: Sequence[T], index: int) -> list[T]:
    """`items` in the order round `index` (from 0) runs them: from the (index mod n)-th on,
    round the list (ABCD, BCDA, CDAB, ...), so that each one's rounds are spread over the
    session and a steady drift of the machine falls alike on all of them."""
    first = index % len(items)
    return [*items[first:], *items[:first]]
