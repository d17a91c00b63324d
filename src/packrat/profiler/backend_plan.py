"""From the probe choice and each contender's profile to what a model is served on.

`select_backend` keeps the backends fast on some probe cell (its contenders). The caller
profiles each, side by side, one thread count at a time in alternating turns
(`profile_order`), and `serve_by_plans` lets the plans decide (`controller.backend_mix`): the
contender whose plans are fastest over every batch size, or a mix where each instance runs
the backend fastest for its cell (`models.mixed_source`). The caller profiles because the
server does it on its event loop's terms and a benchmark on its own; both plan with the
table returned here.

Then `with_chunks`, for every model whose profile allows it: instances run a batch as
consecutive chunks wherever the profile says that is faster (`optimizer.chunks`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

from packrat.controller.backend_mix import (
    BackendMix,
    describe_owners,
    geometric_mean,
    mix_backends,
)
from packrat.models.chunked_source import ChunkedSource, chunkable
from packrat.models.mixed_source import MixedSource
from packrat.optimizer.chunks import chunked
from packrat.optimizer.table import LatencyTable
from packrat.profiler.backend_choice import Candidate, mixable
from packrat.profiler.backend_select import Selection

logger = logging.getLogger(__name__)


CONTENDER_PASSES = 2
"""Passes each contender's profile gets (`profile_order`)."""


@dataclasses.dataclass(frozen=True)
class ProfileStep:
    """One sweep of the contenders' profiling: `candidate`'s thread counts 1..`rows` until
    each of their cells has `passes` passes (`SweepConfig.rows` and `passes`)."""

    candidate: Candidate
    rows: int
    passes: int


def profile_order(
    contenders: Sequence[Candidate], cores: int, passes: int = CONTENDER_PASSES
) -> list[ProfileStep]:
    """The sweeps that profile `contenders` side by side on `cores` cores, row by row: in
    each pass, one thread count's cells of every contender in turn before the next thread
    count, the turn reversed from one row to the next and from one pass to the next (A B,
    B A, A B, ...). A cell's latency is the median of its passes (`profiler.sweep`), and the
    contenders' cells of one thread count are measured within minutes of each other, so a
    stretch of the machine running slow or fast weighs on every contender alike, where
    profiles taken one after the other would compare the machine's minutes instead of the
    backends (it drifts 10-30% within minutes here)."""
    steps: list[ProfileStep] = []
    for k in range(1, passes + 1):
        for rows in range(1, cores + 1):
            turn = contenders if (k + rows) % 2 == 0 else list(reversed(contenders))
            steps += [ProfileStep(candidate, rows, k) for candidate in turn]
    return steps


def needs_plans(selection: Selection) -> bool:
    """Whether `selection` has several contenders, so their profiles decide."""
    return len(selection.contenders) > 1


def serve_by_plans(
    selection: Selection,
    tables: Mapping[Candidate, LatencyTable],
    cores: int,
    max_batch: int,
) -> tuple[Selection, LatencyTable]:
    """What to serve, and the table to plan it with, from each contender's (interpolated)
    latency table; `selection` is the probe choice, its contenders the keys of `tables`.

    Raises PlanError if no table plans any batch size up to `max_batch`."""
    by_label = {str(c): tables[c] for c in selection.contenders if c in tables}
    alone = {str(c) for c in selection.contenders if not mixable(c)}
    mix = mix_backends(by_label, cores, max_batch, alone=alone)
    candidates = {str(c): c for c in selection.contenders}
    verdicts = dict(selection.verdicts)
    verdicts.update(_verdicts(mix))
    if mix.mixed:
        sources = [selection.contenders[candidates[label]] for label in mix.labels]
        source = MixedSource(sources, mix.labels, mix.owners)
        chosen = Selection(
            source, selection.candidate, mix.reason, selection.accuracy, verdicts,
            selection.contenders, tuple(candidates[label] for label in mix.labels),
            describe_owners(mix),
        )  # fmt: skip
    else:
        (label,) = mix.labels
        candidate = candidates[label]
        chosen = dataclasses.replace(
            selection,
            source=selection.contenders[candidate],
            candidate=candidate,
            reason=mix.reason,
            verdicts=verdicts,
        )
    logger.info("%s: by the plans, serving on %s", selection.source.name, mix.reason)
    return chosen, mix.table


def with_chunks(selection: Selection, table: LatencyTable) -> tuple[Selection, LatencyTable]:
    """`selection` with its instances running batches in chunks where `table` (interpolated)
    says that is faster, and the table to plan with; as they are where it never is, or the
    model's handler does not take batch tensors."""
    if not chunkable(selection.source):
        return selection, table
    faster, chunks = chunked(table)
    if not chunks.values() - {0}:
        return selection, table
    last = int(table.batches[-1])
    described = chunks.describe(last, lambda size: f"in chunks of {size}" if size else "whole")
    source = ChunkedSource(selection.source, chunks)
    logger.info("%s: batches run in chunks where faster: %s", source.name, described)
    return dataclasses.replace(selection, source=source, chunks=described), faster


def _verdicts(mix: BackendMix) -> dict[str, str]:
    """Each contender's verdict by its plans, against what is served."""
    served = mix.plan_ms["mixed"] if mix.mixed else mix.plan_ms[mix.labels[0]]
    verdicts: dict[str, str] = {}
    for label, latencies in mix.plan_ms.items():
        if label == "mixed":
            continue
        if label in mix.labels:
            verdicts[label] = "chosen, in a mix by cell" if mix.mixed else "chosen"
            continue
        ratio = geometric_mean(latencies) / geometric_mean(served)
        verdicts[label] = f"plans {ratio:.2f}x slower (geometric mean over batch sizes)"
    return verdicts
