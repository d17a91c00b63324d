"""What every operation of an engine shares: its state, its lock, its plan and workers, and
one exchange of commands and replies that turns a worker lost on the way into the engine's
state (`packrat.pool.engine` states the contract).

`EngineCore` declares the attributes `Engine.__init__` sets; the engine's operations are
split by concern over `Engine` (start, batches, stop), `Reconfiguring` (other plans) and
`Measuring` (timed runs and reports from inside the workers), which all build on it.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Sequence
from typing import TypeVar

from packrat.errors import PlanError, TopologyError, WorkerError
from packrat.pool.config import EngineConfig
from packrat.pool.messages import Command
from packrat.pool.process import ChildProcess, Outcome
from packrat.pool.workers import WorkerSet, failure
from packrat.types import Layout, Plan

ReplyT = TypeVar("ReplyT")


class EngineState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DEGRADED = "degraded"  # a worker was lost in a batch; replace_lost() restores it
    BROKEN = "broken"  # a worker died or timed out elsewhere; only close() is left
    CLOSED = "closed"


class EngineCore:
    """The state an engine's operations share; every operation holds `_lock`."""

    _plan: Plan
    _config: EngineConfig
    _workers: WorkerSet
    _pool_size: int  # workers kept, spares included
    _wanted: frozenset[Layout]  # workers that cannot move: the layouts kept (empty: any)
    _lost: set[int]  # workers lost in a batch, to replace
    _state: EngineState
    _broken_reason: str
    _lock: threading.Lock

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def pids(self) -> list[int]:
        """Pids of the plan's workers in plan order (empty before `start()`)."""
        return [worker.pid for worker in self._workers.processes[: len(self._plan.instances)]]

    @property
    def lost(self) -> list[int]:
        """Indices of the workers lost in a batch and not yet replaced."""
        return sorted(self._lost)

    def _exchange(
        self,
        workers: Sequence[ChildProcess],
        commands: Sequence[Command],
        timeout_s: float | None,
        lost: dict[int, str] | None = None,
    ) -> list[Outcome | None]:
        """Send each worker its command, then read one reply from each (None: timed out).

        All commands go out before any reply is read, so instances run in parallel. A worker
        that died or timed out breaks the engine (its pipe is no longer in step), unless
        `lost` is given: then the engine is only degraded, and `lost` gets the worker's
        index and what happened to it (it must be replaced before the next call).
        """
        outcomes, gone = self._workers.exchange(workers, commands, timeout_s)
        self._note_gone(gone, lost)
        return outcomes

    async def _replies_on_loop(
        self, workers: Sequence[ChildProcess], timeout_s: float | None, lost: dict[int, str]
    ) -> list[Outcome | None]:
        """The replies to a batch's commands, already sent, awaited on the event loop
        (`_lock` held); as `_exchange` with `lost`."""
        outcomes, gone = await self._workers.replies_on_loop(workers, timeout_s)
        self._note_gone(gone, lost)
        return outcomes

    def _note_gone(self, gone: dict[int, str], lost: dict[int, str] | None) -> None:
        """The engine's state after workers died or timed out (see `_exchange`)."""
        for index, reason in gone.items():
            if lost is None:
                self._state = EngineState.BROKEN
                self._broken_reason = reason
            else:
                lost[index] = reason
                self._lost.add(index)
                if self._state is EngineState.RUNNING:
                    self._state = EngineState.DEGRADED

    def _replies(
        self,
        workers: Sequence[ChildProcess],
        commands: Sequence[Command],
        timeout_s: float | None,
        expected: type[ReplyT],
    ) -> list[ReplyT]:
        """Each worker's reply to its command, in order, when every one is an `expected`;
        else WorkerError naming what went wrong with each of the others."""
        outcomes = self._exchange(workers, commands, timeout_s)
        replies: list[ReplyT] = []
        errors: list[str] = []
        for worker, outcome in zip(workers, outcomes, strict=True):
            if isinstance(outcome, expected):
                replies.append(outcome)
            else:
                errors.append(failure(worker, outcome, timeout_s))
        if errors:
            raise WorkerError("; ".join(errors))
        return replies

    def _spare_layout(self) -> Layout:
        """A spare worker's: one thread, over every core of the plan."""
        return 1, tuple(sorted({c for i in self._plan.instances for c in i.cores}))

    def _check_running(self) -> None:
        if self._state is EngineState.RUNNING:
            return
        if self._state is EngineState.BROKEN:
            raise WorkerError(f"engine is broken ({self._broken_reason}); close it and start anew")
        if self._state is EngineState.DEGRADED:
            raise WorkerError(f"engine lost workers {self.lost}; call replace_lost() first")
        raise WorkerError(f"engine is {self._state.value}, not running")


def check_plan(plan: Plan) -> None:
    """Raise PlanError for a plan without instances, TopologyError for one not allocated on
    CPUs this process may use."""
    if not plan.instances:
        raise PlanError("the plan has no instances")
    allowed = os.sched_getaffinity(0)
    for index, instance in enumerate(plan.instances):
        if not instance.cores:
            raise TopologyError(
                f"instance {index} of plan {plan.describe()} has no cores; "
                "allocate the plan first (packrat.topology.allocate)"
            )
        outside = sorted(set(instance.cores) - allowed)
        if outside:
            raise TopologyError(
                f"instance {index} is placed on cores {outside}, which this process may not "
                f"use (allowed: {sorted(allowed)})"
            )


def plan_cores(plan: Plan) -> frozenset[int]:
    return frozenset(core for instance in plan.instances for core in instance.cores)
