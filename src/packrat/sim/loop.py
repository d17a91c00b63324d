"""The event loop: arrivals through the server's dynamic batching to the simulated model.

The semantics are the server's (`packrat.server.batcher`), event for event:

- requests queue in FIFO order; each is admitted or refused (503) on arrival by the batcher's
  own rule (`packrat.controller.admission.Admission`: `max_queue`, and while the model is
  overloaded the expected wait at the recent times of batches of each size against
  `max_queue_wait_ms`, with the requests past it shed from the back of the queue);
- one batch runs at a time; when none runs, the next is dispatched as soon as
  `max_batch_size` requests wait, or `max_batch_delay_ms` after its first request arrived
  (at once if that has passed when the running batch ends);
- a batch takes what `SimModel.run_batch` says (a switch, then the slowest instance); every
  request of it is answered at its end, and the batch time feeds `BatchTimes`.

Arrivals are processed in order by one pass; a batch costs O(1) besides its requests, so an
hour at 100 requests/s (360,000 requests) takes about a second.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from packrat.controller.admission import Admission, BatchTimes
from packrat.controller.batching import BatchingConfig
from packrat.progress import NullProgress, Progress
from packrat.sim.model import SimModel
from packrat.sim.results import SimResult
from packrat.workload.schedule import OpenLoop

PROGRESS_EVERY = 2048
"""Batches between two progress reports."""


def simulate(
    load: OpenLoop,
    model: SimModel,
    batching: BatchingConfig,
    progress: Progress | None = None,
) -> SimResult:
    """Serve `load` with `model` behind a batcher configured by `batching`; every request's
    fate. `progress` is advanced in simulated seconds."""
    progress = progress or NullProgress()
    arrivals: list[float] = load.arrivals_s.tolist()
    n = len(arrivals)
    done_s = np.full(n, math.nan)  # nan: refused
    sizes: list[int] = []
    size = batching.max_batch_size
    delay_s = batching.max_batch_delay_ms / 1000.0
    queue: collections.deque[int] = collections.deque()
    admission = Admission(  # the batcher's rule, its state, its estimate of batch times
        batching.max_batch_size,
        batching.max_queue,
        batching.max_queue_wait_ms,
        BatchTimes(model.predicted_s),
    )
    free_s = 0.0  # when the running batch ends (the batcher is free from then on)
    i = 0  # the next arrival not yet processed
    progress.start(load.duration_s, f"simulating {n} requests")
    reported_s = 0.0

    def admit_until(end_s: float, running: int = 0, running_since_s: float = 0.0) -> None:
        """Process the arrivals before `end_s` while no batch is dispatched; a batch of
        `running` requests runs from `running_since_s` (0: none runs)."""
        nonlocal i
        while i < n and arrivals[i] < end_s:
            running_s = arrivals[i] - running_since_s if running else None
            if admission.refusal(len(queue), running, running_s) is None:
                queue.append(i)
            else:  # shed requests stay unanswered (nan), as refused ones
                for _ in range(admission.shed(len(queue), running, running_s)):
                    queue.pop()
            i += 1

    while i < n or queue:
        if not queue:  # idle: the next arrival starts a batch (an empty queue admits it)
            free_s = max(free_s, arrivals[i])
            admit_until(math.nextafter(free_s, math.inf))
        # The batch forms from free_s on: dispatch when full or at the first one's deadline.
        full = len(queue) >= size
        dispatch_s = free_s if full else max(free_s, arrivals[queue[0]] + delay_s)
        while len(queue) < size and i < n and arrivals[i] <= dispatch_s:
            if admission.refusal(len(queue)) is None:
                queue.append(i)
                if len(queue) >= size:
                    dispatch_s = max(free_s, arrivals[i])
            else:
                for _ in range(admission.shed(len(queue))):
                    queue.pop()
            i += 1
        count = min(size, len(queue))
        batch = [queue.popleft() for _ in range(count)]
        admission.dispatched(len(queue))
        took_s = model.run_batch(count, count + len(queue), dispatch_s)
        end_s = dispatch_s + took_s
        done_s[batch] = end_s
        sizes.append(count)
        admit_until(end_s, count, dispatch_s)  # these arrive while the batch runs
        admission.times.record(count, took_s)
        free_s = end_s
        if len(sizes) % PROGRESS_EVERY == 0:
            now_s = min(end_s, load.duration_s)
            progress.advance(now_s - reported_s, f"{i} of {n} requests")
            reported_s = now_s
    progress.advance(max(0.0, load.duration_s - reported_s), f"{n} of {n} requests")
    end_s = max(load.duration_s, free_s)
    return SimResult(
        load=load,
        done_s=done_s,
        batch_sizes=np.asarray(sizes, dtype=np.int64),
        switch_times_s=np.asarray(model.switch_times_s, dtype=np.float64),
        time_per_plan_s=model.time_per_plan(end_s),
        end_s=end_s,
    )
