"""What a served model reports as it runs: a record of every batch, a switch for every change
of plan, the counters and logs that keep them, and the listeners (metrics) that get them."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

SWITCH_LOG = 10_000
"""Switches kept for `switch_log()` (all are counted); `describe()` shows the last few."""
DESCRIBED_SWITCHES = 10


@dataclass(frozen=True)
class BatchRecord:
    """One batch that ran: requests per instance and seconds each instance spent computing
    (plan order; 0 for idle or failed instances), the wall time from dispatch to the
    last reply (so it includes the pipes to the workers), and the seconds each request
    waited in the queue before the batch was dispatched (arrival order)."""

    sizes: tuple[int, ...]
    compute_s: tuple[float, ...]
    wall_s: float
    queue_s: tuple[float, ...] = ()

    @property
    def size(self) -> int:
        return sum(self.sizes)


BatchListener = Callable[[BatchRecord], None]
"""Called after every batch with its record."""


@dataclass(frozen=True)
class Switch:
    """One change of plan: from -> to (`Plan.describe()`), why, when (unix seconds) and how
    long the engine took (workers retuned in place, workers started)."""

    old_plan: str
    new_plan: str
    reason: str
    at_unix_s: float
    took_s: float
    retuned: int
    spawned: int

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.old_plan,
            "to": self.new_plan,
            "reason": self.reason,
            "at_unix_s": self.at_unix_s,
            "took_ms": 1000.0 * self.took_s,
            "workers_retuned": self.retuned,
            "workers_started": self.spawned,
        }


SwitchListener = Callable[[Switch], None]
RestartListener = Callable[[int], None]
"""Called with how many instances were just replaced after being lost."""


class Listeners(Generic[T]):
    """Callbacks of one kind, called in the order added, on the event loop: they must be
    quick. One that raises is logged (as `what` failed) and the others still run."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._listeners: list[Callable[[T], None]] = []

    def add(self, listener: Callable[[T], None]) -> None:
        self._listeners.append(listener)

    def __call__(self, value: T) -> None:
        for listener in self._listeners:
            try:
                listener(value)
            except Exception:
                logger.exception("%s failed", self._what)


class BatchCounters:
    """A model's totals over its batches: seconds each instance computed (plan order), the
    last batch's requests per instance, batches and requests run."""

    def __init__(self, instances: int) -> None:
        self.busy_s = [0.0] * instances
        self.last_batch_sizes: tuple[int, ...] = ()
        self.batches_total = 0
        self.requests_total = 0

    def record(self, record: BatchRecord) -> None:
        for k, seconds in enumerate(record.compute_s):
            self.busy_s[k] += seconds
        self.last_batch_sizes = record.sizes
        self.batches_total += 1
        self.requests_total += record.size

    def resize(self, instances: int) -> None:
        """The plan now has `instances` instances: keep the times of the first ones."""
        self.busy_s = (self.busy_s + [0.0] * instances)[:instances]


class SwitchLog:
    """The last `SWITCH_LOG` changes of plan, how many there were, and who to tell."""

    def __init__(self, label: str) -> None:
        self._switches: collections.deque[Switch] = collections.deque(maxlen=SWITCH_LOG)
        self.total = 0
        self.listeners: Listeners[Switch] = Listeners(f"switch listener of model {label}")

    def add(self, switch: Switch) -> None:
        self._switches.append(switch)
        self.total += 1
        self.listeners(switch)

    @property
    def switches(self) -> tuple[Switch, ...]:
        """Oldest first."""
        return tuple(self._switches)

    def to_json(self) -> list[dict[str, Any]]:
        return [switch.to_json() for switch in self._switches]
