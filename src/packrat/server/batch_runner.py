"""The data path of one batch: split it among the running instances, run the sub-batches on the
pool (awaited on the event loop, which keeps accepting requests meanwhile), and give each
request its own output or error.

Errors, per request: a model error in one instance's sub-batch fails exactly the requests of
that sub-batch with InferenceFailed (the model's message); the rest of the batch succeeds. A
worker that dies or misses the batch deadline fails only its own sub-batch's requests, with
Unavailable (503: they may be retried), and is replaced before the next batch
(`packrat.server.replacement`). A pool that cannot run batches at all fails every request of
the batch with Unavailable.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from packrat.controller.split_sizes import MemoizedSplit
from packrat.errors import WorkerError
from packrat.optimizer.table import LatencyTable
from packrat.pool.engine import SubBatch
from packrat.pool.protocol import InstancePool
from packrat.server.errors import InferenceFailed, Unavailable
from packrat.server.records import BatchCounters, BatchRecord, Listeners
from packrat.server.replacement import LostInstances
from packrat.types import Plan

logger = logging.getLogger(__name__)


class BatchRunner:
    """Runs batches on `pool`'s instances, split by `table` (None: by thread share), and
    counts them (`counters`); `listeners` get each batch's `BatchRecord` when `publish` is
    called (the batcher calls it once the batch's requests are answered: listeners are not
    on any request's path). Lost instances are handed to `lost` for replacement."""

    def __init__(
        self, pool: InstancePool, table: LatencyTable | None, label: str, lost: LostInstances
    ) -> None:
        self._pool = pool
        self._label = label
        self._lost = lost
        self._splits = MemoizedSplit(table)
        self.counters = BatchCounters(len(pool.plan.instances))
        self.listeners: Listeners[BatchRecord] = Listeners(f"batch listener of model {label}")
        self._unpublished: collections.deque[BatchRecord] = collections.deque()

    def split(self, batch: int) -> tuple[list[int], float]:
        """Requests per instance for a batch of `batch`, and its predicted latency in ms
        (inf if the profile cannot predict it, nan without a profile). Memoized."""
        return self._splits.split([i.threads for i in self._pool.plan.instances], batch)

    def predicted_s(self, batch: int) -> float | None:
        """How long a batch of `batch` should take on the plan now running, by the profile,
        seconds (None without a profile or where it cannot say)."""
        _, latency_ms = self.split(batch)
        return latency_ms / 1000.0 if math.isfinite(latency_ms) else None

    def retable(self, table: LatencyTable) -> None:
        """Split by `table` from the next batch on (the profile, corrected by served batches)."""
        self._splits = MemoizedSplit(table)

    def plan_changed(self, plan: Plan) -> None:
        """The pool now serves `plan`, on other instances."""
        self.counters.resize(len(plan.instances))

    async def run(
        self, requests: list[Any], waits_s: tuple[float, ...]
    ) -> list[Any | BaseException]:
        """One (output, compute seconds of its sub-batch) or error per request, by position;
        `waits_s`: how long each request waited in the queue (for the record)."""
        sizes, _ = self.split(len(requests))
        started = time.perf_counter()
        try:
            parts = await self._pool.run_split_on_loop(requests, sizes)
        except WorkerError as exc:
            logger.error("model %s: instance pool failed: %s", self._label, exc)
            return [Unavailable(f"model {self._label} is unavailable: {exc}") for _ in requests]
        compute_s = [0.0] * len(sizes)
        for part in parts:
            compute_s[part.instance] = part.compute_s
        wall_s = time.perf_counter() - started
        record = BatchRecord(tuple(sizes), tuple(compute_s), wall_s, waits_s)
        self.counters.record(record)
        self._unpublished.append(record)
        if any(part.lost for part in parts):
            for part in parts:
                if part.lost:
                    logger.error("model %s: %s", self._label, part.error)
            self._lost.replace_soon()
        return _results(len(requests), parts, self._label)

    def publish(self) -> None:
        """Give `listeners` the records of the batches run since the last call, in order."""
        while self._unpublished:
            self.listeners(self._unpublished.popleft())


def _results(count: int, parts: Sequence[SubBatch], label: str) -> list[Any | BaseException]:
    """One (output, compute seconds of its sub-batch), InferenceFailed (the model raised) or
    Unavailable (its instance was lost) per request, by position (one error object each)."""
    results: list[Any | BaseException] = [None] * count
    for part in parts:
        if part.lost:
            for position in range(part.start, part.stop):
                results[position] = Unavailable(
                    f"model {label}: {part.error}; the instance is being restarted, retry"
                )
        elif part.error is not None:
            for position in range(part.start, part.stop):
                results[position] = InferenceFailed(part.error)
        else:
            results[part.start : part.stop] = [(out, part.compute_s) for out in part.outputs]
    return results
