"""An engine's worker processes, by index: started pinned to their threads and cores (each
with its shared-memory arenas), waited on until ready, sent commands and read.

`WorkerSet` knows processes and messages, not plans or the engine's state: what a worker that
died or hung means (a broken or a degraded engine) is for `packrat.pool.engine` to decide, and
the engine passes its config to each call. It is not thread-safe; the engine calls it under its
lock.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence

from packrat.errors import WorkerError
from packrat.models.base import ModelSource
from packrat.pool.arena import ArenaPair
from packrat.pool.config import EngineConfig
from packrat.pool.messages import (
    BatchFailed,
    Command,
    MeasureFailed,
    Ready,
    WorkerFailed,
    WorkerSpec,
)
from packrat.pool.process import (
    ChildProcess,
    Died,
    Outcome,
    Undecodable,
    await_replies,
    spawn_child,
    stop_children,
    wait_replies,
)
from packrat.pool.weights import ensure_weights_file
from packrat.pool.worker import run_worker
from packrat.types import Layout

logger = logging.getLogger(__name__)


class WorkerSet:
    """The worker processes (`processes`) and their layouts (`layouts`), index by index.

    visible_cores: the CPUs every worker boots seeing (see `Engine`); the engine widens it
        when a plan places an instance beyond it.
    """

    def __init__(self, source: ModelSource, visible_cores: frozenset[int]) -> None:
        self.processes: list[ChildProcess] = []
        self.layouts: list[Layout] = []
        self.visible_cores = visible_cores
        self._source = source
        self._weights_path: str | None = None

    @property
    def moves_in_place(self) -> bool:
        """Whether a worker can be re-pinned and re-threaded (`ModelSource.moves_in_place`);
        else a worker keeps the layout it started with for good."""
        return self._source.moves_in_place

    def arrange(self, order: Sequence[int]) -> None:
        """Put the workers at indices `order` first, in that order, and the others after them
        in the order they were."""
        placed = set(order)
        indices = [*order, *(k for k in range(len(self.processes)) if k not in placed)]
        self.processes[:] = [self.processes[k] for k in indices]
        self.layouts[:] = [self.layouts[k] for k in indices]
        for index, process in enumerate(self.processes):
            process.label = f"instance {index}"

    def stop_from(self, index: int, timeout_s: float) -> None:
        """Stop the workers from `index` on and drop them from the set."""
        stop_children(self.processes[index:], timeout_s)
        del self.processes[index:], self.layouts[index:]

    def export_weights(self, config: EngineConfig, deadline: float) -> None:
        """Write the model's shared weights file (once per model) for the workers to map,
        if `config` shares weights."""
        if config.share_weights:
            path = ensure_weights_file(
                self._source, config.resolved_weights_dir(), remaining(deadline)
            )
            self._weights_path = str(path)

    def spawn(
        self,
        config: EngineConfig,
        layouts: Sequence[Layout],
        deadline: float,
        at: Sequence[int] | None = None,
    ) -> tuple[Ready, ...]:
        """Start one worker per (threads, cores), after the existing ones or in place of the
        workers at indices `at`, and wait until all of them are ready.

        Raises WorkerError (with the worker's own message) otherwise, after stopping every
        worker it started and dropping those it added, so the set is as it was (but for
        stopped workers at `at`). A worker still booting must not outlive a failed start: it
        would send Ready later, and the next command to it would read that for its reply.
        """
        first = len(self.processes)
        indices = list(at) if at is not None else list(range(first, first + len(layouts)))
        parent_pid = os.getpid()
        started: list[ChildProcess] = []
        try:
            for index, (threads, cores) in zip(indices, layouts, strict=True):
                arenas = self._new_arenas(config, index)
                spec = WorkerSpec(
                    index,
                    threads,
                    cores,
                    self._source,
                    self._weights_path,
                    parent_pid,
                    keep_freed_memory=config.keep_freed_memory,
                    visible_cores=tuple(sorted(self.visible_cores)),
                    arenas=None if arenas is None else arenas.peer(),
                )
                child = spawn_child(
                    run_worker,
                    spec,
                    label=f"instance {index}",
                    detail=f"cores {list(cores)}",
                    arenas=arenas,
                )
                started.append(child)
                if index < len(self.processes):
                    self.processes[index], self.layouts[index] = child, (threads, cores)
                else:
                    self.processes.append(child)
                    self.layouts.append((threads, cores))
            return self._wait_ready(config, started, deadline)
        except BaseException:
            # No grace: booting workers would only read Stop once they are ready.
            stop_children(started, timeout_s=0.0)
            del self.processes[first:], self.layouts[first:]
            raise

    def exchange(
        self,
        workers: Sequence[ChildProcess],
        commands: Sequence[Command],
        timeout_s: float | None,
    ) -> tuple[list[Outcome | None], dict[int, str]]:
        """Send each worker its command, then read one reply from each (None: timed out).

        All commands go out before any reply is read, so instances run in parallel. Returns
        the replies in order, and by worker index what happened to each worker that died or
        timed out: its pipe is no longer in step, so it must not be sent another command.
        """
        for worker, command in zip(workers, commands, strict=True):
            worker.send(command)  # a closed pipe marks the worker gone: it yields Died below
        return self._settled(workers, wait_replies(workers, timeout_s), timeout_s)

    @staticmethod
    def send(workers: Sequence[ChildProcess], commands: Sequence[Command]) -> None:
        """Send each worker its command (a closed pipe marks the worker gone)."""
        for worker, command in zip(workers, commands, strict=True):
            worker.send(command)

    async def replies_on_loop(
        self, workers: Sequence[ChildProcess], timeout_s: float | None
    ) -> tuple[list[Outcome | None], dict[int, str]]:
        """The second half of `exchange` for a caller on the event loop, after `send`: the
        loop waits for the replies (`await_replies`); it must not be cancelled before they
        are in."""
        return self._settled(workers, await await_replies(workers, timeout_s), timeout_s)

    def _settled(
        self,
        workers: Sequence[ChildProcess],
        outcomes: dict[int, Outcome],
        timeout_s: float | None,
    ) -> tuple[list[Outcome | None], dict[int, str]]:
        """The replies by position in `workers` (None: timed out), and what happened to each
        worker that died or timed out, by its index in the set."""
        result: list[Outcome | None] = []
        gone: dict[int, str] = {}
        for position, worker in enumerate(workers):
            outcome = outcomes.get(position)
            if outcome is None or isinstance(outcome, Died):
                gone[self.processes.index(worker)] = failure(worker, outcome, timeout_s)
            result.append(outcome)
        return result, gone

    def _new_arenas(self, config: EngineConfig, index: int) -> ArenaPair | None:
        """A new worker's shared memory for its requests and outputs; None (the pipe carries
        them) if `config` says so or the system has no anonymous shared memory."""
        if not config.shared_tensors:
            return None
        try:
            return ArenaPair.create(f"instance-{index}")
        except OSError as exc:
            logger.warning("instance %d sends tensors through its pipe: %s", index, exc)
            return None

    def _wait_ready(
        self, config: EngineConfig, workers: Sequence[ChildProcess], deadline: float
    ) -> tuple[Ready, ...]:
        """Each worker's Ready, in order; WorkerError at the first failure or the deadline."""
        timeout_s = remaining(deadline)
        outcomes = wait_replies(workers, timeout_s, stop_when=lambda o: not isinstance(o, Ready))
        ready: list[Ready] = []
        late: list[str] = []
        for position, worker in enumerate(workers):
            outcome = outcomes.get(position)
            if outcome is None:
                late.append(worker.describe())
            elif isinstance(outcome, Ready):
                ready.append(outcome)
            else:
                raise WorkerError(failure(worker, outcome, timeout_s))
        if late:
            raise WorkerError(
                f"{len(late)} worker(s) not ready within {config.start_timeout_s:g} s: "
                + ", ".join(late)
            )
        return tuple(ready)


def failure(worker: ChildProcess, outcome: Outcome | None, timeout_s: float | None) -> str:
    """One line saying what went wrong with `worker`'s reply."""
    where = worker.describe()
    if outcome is None:
        return f"{where} did not reply within {timeout_s} s"
    if isinstance(outcome, Died):
        return f"{where} died with exit code {outcome.exitcode}"
    if isinstance(outcome, BatchFailed | MeasureFailed):
        return f"{where} failed: {outcome.error_type}: {outcome.message}"
    if isinstance(outcome, WorkerFailed):
        return f"{where} failed to {outcome.phase.value}: {outcome.error_type}: {outcome.message}"
    if isinstance(outcome, Undecodable):
        return f"{where} sent an undecodable reply: {outcome.message}"
    return f"{where} sent an unexpected {type(outcome).__name__}"


def new_layouts(wanted: Iterable[Layout], held: Iterable[Layout]) -> list[Layout]:
    """The layouts of `wanted`, in order and each once, that `held` does not name."""
    taken = set(held)
    return [layout for layout in dict.fromkeys(wanted) if layout not in taken]


def remaining(deadline: float) -> float:
    """Seconds left until `deadline` (a `time.monotonic()` time), at least 0."""
    return max(0.0, deadline - time.monotonic())
