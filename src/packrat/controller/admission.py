"""Who gets into a model's queue: the rule the server's batcher and the simulator both run.

A model queues up to `max_queue` requests; one more is refused (503), as TorchServe's
job_queue_size. That refusal also marks the model *overloaded*, and while it is, the queue is
held to what `max_queue_wait_ms` of batches serves: a request whose batches ahead would take
longer is refused, and requests already waiting past that depth are shed from the back of the
queue (503 too). The model stays overloaded until a batch leaves the queue empty with no
request refused since the batch before: the arrivals no longer outrun the batches. (Ending
it whenever the queue emptied was not enough: a flood's queue, shed to one batch, empties at
the next dispatch, and it then refilled to `max_queue` every cycle; docs/robustness-flood.md.)

So a flood's backlog, and the wait of the requests it admits, stay a couple of seconds deep
instead of `max_queue` requests deep, while a closed loop of up to `max_queue` clients, whose
queue never overflows, is never refused: the two look alike at first (a burst of 100
requests), and only the overflow tells them apart.

Pure and deterministic: no clock, no I/O. The batcher feeds it batch times (`BatchTimes`) and
asks it on every arrival and dispatch; the simulator does the same in simulated time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 100
"""Requests a model queues before refusing more with 503, as TorchServe's job_queue_size: a
flood then costs bounded memory and latency instead of both growing without end."""

DEFAULT_MAX_QUEUE_WAIT_MS = 2000.0
"""How deep an overloaded model's queue is held, in ms of batches: past a couple of seconds a
client is better told to retry (or go elsewhere), and a flood's backlog drains in seconds."""

WAIT_ALPHA = 0.25
"""Weight of the newest batch in the running estimate of a batch's time (per batch size)."""

QUEUE_FULL_RETRY_AFTER_S = 1
"""Retry-After (seconds) on a request refused or shed: the queue moves by a batch at a time,
so a second is usually enough for room to appear."""


@dataclass
class BatchTimes:
    """How long batches take, per batch size: a running average of each size's times, first
    estimated from a prediction when there is one.

    Admission asks how long the batches ahead of a request will take. One average over every
    batch does not answer that when the batch size changes with the load: at the onset of a
    flood, batches of 1 had run (bert-base on 2 cores: 0.15 s), the queue of full batches
    ahead of a new request was costed at 0.15 s a batch instead of 1.15 s, and requests were
    admitted to wait 9 s (docs/robustness-flood.md).

    `predict_s(size)` (e.g. the profile's latency of a batch of `size` on the running plan,
    seconds; None where it cannot say) shapes the estimate of a size that has not run yet:
    it is scaled by how the nearest size that has run compared with its own prediction, since
    the profile times the model alone and a served batch adds its serving overhead. Without
    it, an unseen size is the nearest seen one scaled in proportion to the size: cautious
    where batching is efficient, since a full batch is costed as that many single requests
    (1.7-2.2x the time a full batch then took, docs/admission.md).
    """

    predict_s: Callable[[int], float | None] | None = None
    _average_s: dict[int, float] = field(default_factory=dict)

    def record(self, size: int, took_s: float) -> None:
        """One more batch of `size` requests took `took_s` seconds."""
        previous = self._average_s.get(size)
        self._average_s[size] = (
            took_s if previous is None else previous + WAIT_ALPHA * (took_s - previous)
        )

    def batch_s(self, size: int) -> float | None:
        """The expected time of a batch of `size` requests, seconds: its own average once such
        a batch has run, else the prediction scaled by the nearest size that has run (or as
        it is, before any), else the nearest size's average scaled in proportion to the
        size. None when nothing is known."""
        if size in self._average_s:
            return self._average_s[size]
        predicted = self._predicted_s(size)
        if not self._average_s:
            return predicted
        nearest = min(self._average_s, key=lambda seen: (abs(seen - size), -seen))
        seen_predicted = self._predicted_s(nearest)
        if predicted is not None and seen_predicted is not None:
            return predicted * self._average_s[nearest] / seen_predicted
        return self._average_s[nearest] * size / nearest

    def _predicted_s(self, size: int) -> float | None:
        if self.predict_s is None:
            return None
        try:
            predicted = self.predict_s(size)
        except Exception:  # an estimate must never fail a request
            logger.exception("predicting a batch of %d failed", size)
            return None
        if predicted is None or not (math.isfinite(predicted) and predicted > 0):
            return None
        return predicted


def expected_wait_ms(
    queued: int,
    max_batch_size: int,
    times: BatchTimes,
    running_size: int = 0,
    running_s: float | None = None,
) -> float:
    """How long a request queued behind `queued` others would wait: queued / max_batch_size
    full batches, plus what is left of the running batch of `running_size` requests if one
    has run for `running_s` seconds, at the times of `times` (0 before any batch ran).

    The running batch counts for what is left of it, not a whole batch: counted whole, a
    queue at 80% load refused requests that would have waited well under the limit."""
    full_s = times.batch_s(max_batch_size)
    if full_s is None:
        return 0.0
    left_s = 0.0
    if running_s is not None and running_size > 0:
        left_s = max(0.0, (times.batch_s(running_size) or 0.0) - running_s)
    return 1000.0 * (queued / max_batch_size * full_s + left_s)


@dataclass
class Admission:
    """One model's admission: its limits, its batch times, and whether it is overloaded.

    max_batch_size: a batch's most requests; max_queue: most requests waiting;
    max_queue_wait_ms: how deep an overloaded model's queue is held, in ms of batches (0: not
    held, `max_queue` alone bounds it). A full batch's worth is always admitted.
    """

    max_batch_size: int
    max_queue: int
    max_queue_wait_ms: float
    times: BatchTimes = field(default_factory=BatchTimes)
    overloaded: bool = False
    _refused_since_dispatch: bool = False

    def refusal(
        self, queued: int, running_size: int = 0, running_s: float | None = None
    ) -> str | None:
        """Why a request arriving with `queued` requests waiting is refused, or None if it is
        admitted; a refusal because the queue is full marks the model overloaded.
        `running_size` and `running_s`: the running batch's size and how long it has run
        (0 and None if none runs)."""
        if queued >= self.max_queue:
            if not self.overloaded:
                logger.info("queue full (%d waiting): overloaded until it drains", queued)
            self.overloaded = self._refused_since_dispatch = True
            return f"the model's queue is full ({self.max_queue} requests waiting)"
        if not self._over_wait(queued, running_size, running_s):
            return None
        self._refused_since_dispatch = True
        wait_ms = expected_wait_ms(queued, self.max_batch_size, self.times, running_size, running_s)
        return (
            f"the model is overloaded: {queued} requests waiting would take {wait_ms:.0f} ms, "
            f"over the limit of {self.max_queue_wait_ms:g} ms"
        )

    def shed(self, queued: int, running_size: int = 0, running_s: float | None = None) -> int:
        """How many of the `queued` requests to drop from the back of the queue: while the
        model is overloaded, those whose batches ahead would take over the limit (never
        below a full batch's worth); 0 otherwise."""
        kept = queued
        while kept > 0 and self._over_wait(kept - 1, running_size, running_s):
            kept -= 1
        return queued - kept

    def dispatched(self, left: int) -> None:
        """A batch left the queue with `left` requests waiting: if none, and none was refused
        since the batch before, the model is not overloaded any more."""
        if self.overloaded and left == 0 and not self._refused_since_dispatch:
            logger.info("queue drained: no longer overloaded")
            self.overloaded = False
        self._refused_since_dispatch = False

    def _over_wait(self, queued: int, running_size: int, running_s: float | None) -> bool:
        """Whether, overloaded, a request behind `queued` others would wait over the limit."""
        if not self.overloaded or not self.max_queue_wait_ms or queued < self.max_batch_size:
            return False
        wait_ms = expected_wait_ms(queued, self.max_batch_size, self.times, running_size, running_s)
        return wait_ms > self.max_queue_wait_ms
