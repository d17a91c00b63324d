"""The engine: run one plan as pinned worker processes and serve batches with it.

`Engine(source, plan).start()` spawns one worker per instance of an allocated plan, all at once,
and waits until every worker is ready. `infer(requests)` splits a batch of exactly `plan.batch`
requests among the instances in plan order, sends every sub-batch before waiting for any reply,
and returns the outputs in request order. The bytes of request and output tensors cross
through each worker's shared-memory arenas, not its pipe (`packrat.pool.arena`); the outputs
returned are the engine's own copies. `run_split` runs a batch split as given;
`run_split_on_loop` does the same for a caller on the asyncio event loop (the server's), whose
loop then waits for the replies itself instead of a thread.

Failure contract: a model error in one sub-batch raises WorkerError naming the instance, after
every other instance's reply has been read, and the engine keeps serving. A worker that dies,
or does not reply within `batch_timeout_s`, during `run_split` loses only its own sub-batch
(`SubBatch.lost`): the other instances' outputs are returned, and the engine is *degraded*
until `replace_lost()` starts a fresh worker with the same threads and cores in its place.
Anywhere else (a move, a measurement), a lost worker leaves the engine *broken*: every later
call raises WorkerError until `close()`. A switch (`reconfigure`) whose new workers fail to
start changes nothing: they are stopped and the old plan keeps serving. Nothing ever waits on
a dead worker, and no worker that failed to start is left running. One call runs at a time;
concurrent callers are serialized.

`Engine` is one class split by concern over modules: starting, batches and stopping here;
changing plans in `packrat.pool.reconfigure`; measuring inside the workers in
`packrat.pool.measure`; the state, lock and command exchange they share in `packrat.pool.core`;
the worker processes themselves in `packrat.pool.workers`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from packrat.errors import WorkerError
from packrat.models.base import ModelSource
from packrat.pool.config import EngineConfig
from packrat.pool.core import EngineState, check_plan, plan_cores
from packrat.pool.measure import Measuring
from packrat.pool.messages import BatchDone, Command, Ready, RunBatch
from packrat.pool.process import ChildProcess, Outcome, stop_children
from packrat.pool.reconfigure import Reconfiguring
from packrat.pool.split import batch_slices
from packrat.pool.workers import WorkerSet, failure, new_layouts
from packrat.types import Layout, Plan


@dataclass(frozen=True)
class SubBatch:
    """What one instance returned for requests[start:stop]: outputs, or an error message;
    and the seconds the worker spent computing them (0 when it failed)."""

    instance: int
    start: int
    stop: int
    outputs: tuple[Any, ...]
    error: str | None
    compute_s: float = 0.0
    lost: bool = False  # the worker died or hung: its requests got no answer


class Engine(Reconfiguring, Measuring):
    """One plan's instances as pinned worker processes.

    `plan` must be allocated: every instance needs its `cores` (see `packrat.topology`), all of
    them CPUs this process may use. Instances may share CPUs (useful on small test machines),
    though an allocated plan gives each its own. Use as a context manager, or call `start()`
    and `close()`. Changing plans comes from `Reconfiguring` (`packrat.pool.reconfigure`),
    measuring inside the workers from `Measuring` (`packrat.pool.measure`).

    visible_cores: every CPU the model's instances may be placed on (default: every CPU this
        process may use). Workers boot seeing them, so the thread pools that runtimes size
        once per process (OpenMP's count) fit the largest instance the model can have, not
        the whole machine: on a 128-core server, a two-thread instance of a model given 16
        cores must not start a pool of 128 threads. Widened by any plan that places an
        instance beyond them.
    pool_size: workers to start, the plan's first and then spares (one thread each), which
        later plans with more instances take over and re-thread in place.
    spares: for a source whose workers cannot move (`ModelSource.moves_in_place`), the
        layouts (threads, cores) of later plans' instances: a spare worker starts on each,
        instead of `pool_size`'s, so that switching to those plans starts no process.
    """

    def __init__(
        self,
        source: ModelSource,
        plan: Plan,
        config: EngineConfig | None = None,
        *,
        pool_size: int | None = None,
        visible_cores: Sequence[int] | None = None,
        spares: Sequence[Layout] = (),
    ) -> None:
        check_plan(plan)
        self._plan = plan
        usable = visible_cores if visible_cores is not None else os.sched_getaffinity(0)
        self._config = config if config is not None else EngineConfig()
        self._workers = WorkerSet(source, frozenset(usable) | plan_cores(plan))
        # Workers started up front: the plan's instances, then spares that later plans with
        # more instances take over without waiting for a model to load.
        self._pool_size = max(len(plan.instances), pool_size or 0)
        self._spares = new_layouts(spares, plan.layout)
        self._wanted = frozenset(spares)
        self._lost = set()
        self._ready: tuple[Ready, ...] = ()
        self._start_s: float | None = None
        self._state = EngineState.NEW
        self._broken_reason = ""
        self._next_batch_id = 0
        self._lock = threading.Lock()
        # Stops the workers if the engine is dropped without close(); close() runs it too.
        self._finalizer = weakref.finalize(
            self, stop_children, self._workers.processes, self._config.stop_timeout_s
        )

    @property
    def pool_pids(self) -> list[int]:
        """Pids of every worker, the spares after the plan's."""
        return [worker.pid for worker in self._workers.processes]

    @property
    def ready(self) -> tuple[Ready, ...]:
        """Each worker's Ready report (pid, cores, load time, shared bytes), in plan order."""
        return self._ready

    @property
    def start_s(self) -> float | None:
        """Seconds `start()` took (weight export plus all workers booting), once started."""
        return self._start_s

    def start(self) -> None:
        """Start every worker concurrently and wait until all are ready.

        Raises WorkerError (with the worker's own message) if any worker fails to boot, dies or
        misses `start_timeout_s`; no process is left behind then and the engine is closed.
        """
        with self._lock:
            if self._state is not EngineState.NEW:
                raise WorkerError(f"engine cannot start: it is {self._state.value}")
            started = time.monotonic()
            try:
                self._start_workers(started + self._config.start_timeout_s)
            except BaseException:
                # No grace: booting workers would only read Stop once they are ready.
                stop_children(self._workers.processes, timeout_s=0.0)
                self._finalizer.detach()
                self._state = EngineState.CLOSED
                raise
            self._start_s = time.monotonic() - started
            self._state = EngineState.RUNNING

    def infer(self, requests: Sequence[Any]) -> list[Any]:
        """Outputs for exactly `plan.batch` requests, in request order.

        Raises ValueError for a batch of another size, WorkerError if any instance fails.
        """
        if len(requests) != self._plan.batch:
            raise ValueError(
                f"infer needs exactly {self._plan.batch} requests, got {len(requests)}"
            )
        parts = self.run_split(requests, [i.batch for i in self._plan.instances])
        errors = [p.error for p in parts if p.error is not None]
        if errors:
            raise WorkerError("; ".join(errors))
        return [output for p in parts for output in p.outputs]

    def run_split(self, requests: Sequence[Any], sizes: Sequence[int]) -> list[SubBatch]:
        """Run consecutive runs of `sizes[i]` requests on instance i, all concurrently.

        A size of 0 leaves that instance idle (a smaller batch than the plan's). Returns one
        SubBatch per instance that ran, in request order; a model error fails only its own
        sub-batch. Raises ValueError for sizes that do not cover the requests, WorkerError if
        the engine cannot run batches (broken, degraded or closed).
        """
        self._check_sizes(requests, sizes)
        with self._lock:
            self._check_running()
            batch_id, used, workers, commands = self._batch_commands(requests, sizes)
            lost: dict[int, str] = {}
            outcomes = self._exchange(workers, commands, self._config.batch_timeout_s, lost)
            return self._sub_batches(batch_id, used, workers, outcomes, lost)

    async def run_split_on_loop(
        self, requests: Sequence[Any], sizes: Sequence[int]
    ) -> list[SubBatch]:
        """`run_split` for a caller on the asyncio event loop, which sends the sub-batches
        itself, before it first yields, and waits for the replies itself
        (`packrat.pool.process.await_replies`): no thread is woken on the way there or back,
        which took 8% (0.3-0.6 ms) off the time around a batch on 2 busy cores
        (docs/serve-overhead.md). While another call holds the engine (a switch of plans, a
        measurement) it runs as `run_split` in a thread instead, after that call. Cancelling
        the caller does not cancel the batch: it runs to its end, so the workers' pipes stay
        in step."""
        self._check_sizes(requests, sizes)
        if not self._lock.acquire(blocking=False):
            return await asyncio.to_thread(self.run_split, requests, sizes)
        try:
            self._check_running()
            batch_id, used, workers, commands = self._batch_commands(requests, sizes)
            self._workers.send(workers, commands)
        except BaseException:
            self._lock.release()
            raise
        replies = self._locked_replies(batch_id, used, workers)
        return await asyncio.shield(asyncio.ensure_future(replies))

    async def _locked_replies(
        self, batch_id: int, used: list[tuple[int, slice]], workers: list[ChildProcess]
    ) -> list[SubBatch]:
        """The sub-batches of batch `batch_id`, whose commands `workers` were sent, with
        `_lock` taken, which this releases."""
        try:
            lost: dict[int, str] = {}
            timeout_s = self._config.batch_timeout_s
            outcomes = await self._replies_on_loop(workers, timeout_s, lost)
            return self._sub_batches(batch_id, used, workers, outcomes, lost)
        finally:
            self._lock.release()

    def _check_sizes(self, requests: Sequence[Any], sizes: Sequence[int]) -> None:
        instances = len(self._plan.instances)
        if len(sizes) != instances or any(s < 0 for s in sizes):
            raise ValueError(
                f"sizes must give one count >= 0 per instance ({instances}), got {list(sizes)}"
            )
        if sum(sizes) != len(requests):
            raise ValueError(f"sizes {list(sizes)} do not add up to {len(requests)} requests")

    def _batch_commands(
        self, requests: Sequence[Any], sizes: Sequence[int]
    ) -> tuple[int, list[tuple[int, slice]], list[ChildProcess], list[Command]]:
        """A new batch's id, the (instance, slice of `requests`) of each busy instance, their
        workers and their RunBatch commands (`_lock` held)."""
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        items = list(requests)
        used = [
            (k, part)
            for k, part in enumerate(batch_slices(sizes, allow_empty=True))
            if part.stop > part.start
        ]
        workers = [self._workers.processes[k] for k, _ in used]
        commands: list[Command] = [RunBatch(batch_id, tuple(items[part])) for _, part in used]
        return batch_id, used, workers, commands

    def _sub_batches(
        self,
        batch_id: int,
        used: Sequence[tuple[int, slice]],
        workers: Sequence[ChildProcess],
        outcomes: Sequence[Outcome | None],
        lost: dict[int, str],
    ) -> list[SubBatch]:
        """What each busy instance returned for batch `batch_id`, in request order."""
        results: list[SubBatch] = []
        for (k, part), worker, outcome in zip(used, workers, outcomes, strict=True):
            expected = part.stop - part.start
            if isinstance(outcome, BatchDone) and outcome.batch_id == batch_id:
                if len(outcome.outputs) == expected:
                    results.append(
                        SubBatch(k, part.start, part.stop, outcome.outputs, None, outcome.compute_s)
                    )
                    continue
                error = (
                    f"{worker.describe()} returned {len(outcome.outputs)} outputs "
                    f"for {expected} requests"
                )
            elif k in lost:
                results.append(SubBatch(k, part.start, part.stop, (), lost[k], lost=True))
                continue
            else:
                error = failure(worker, outcome, self._config.batch_timeout_s)
            results.append(SubBatch(k, part.start, part.stop, (), error))
        return results

    def replace_lost(self) -> list[int]:
        """Start a fresh worker in place of each lost one (same index, threads and cores; a
        hung one is killed first), wait until all are ready, and serve again. Takes as long
        as loading the model. Returns the indices replaced (none unless degraded).

        Raises WorkerError if a replacement fails to start (the engine is then broken).
        """
        with self._lock:
            if self._state is not EngineState.DEGRADED:
                return []
            lost = sorted(self._lost)
            stop_children([self._workers.processes[k] for k in lost], timeout_s=0.0)
            layouts = [self._workers.layouts[k] for k in lost]
            try:
                deadline = time.monotonic() + self._config.start_timeout_s
                self._workers.spawn(self._config, layouts, deadline, at=lost)
            except WorkerError as exc:
                self._state = EngineState.BROKEN
                self._broken_reason = f"replacing lost workers failed: {exc}"
                raise
            self._lost.clear()
            self._state = EngineState.RUNNING
            return lost

    def close(self) -> None:
        """Stop every worker: Stop, wait `stop_timeout_s`, then terminate, then kill. Idempotent.

        Safe to call from another thread while a call waits on a hung worker: the workers are
        killed, which ends that call with WorkerError.
        """
        if not self._lock.acquire(timeout=self._config.stop_timeout_s):
            for worker in self._workers.processes:
                if worker.is_alive():
                    worker.kill()
            self._lock.acquire()
        try:
            self._finalizer()
            self._state = EngineState.CLOSED
        finally:
            self._lock.release()

    def __enter__(self) -> Engine:
        if self._state is EngineState.NEW:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _start_workers(self, deadline: float) -> None:
        self._workers.export_weights(self._config, deadline)
        layouts = list(self._plan.layout)
        if self._workers.moves_in_place:
            layouts += [self._spare_layout()] * (self._pool_size - len(layouts))
        else:
            layouts += self._spares
            self._pool_size = max(self._pool_size, len(layouts))
        self._ready = self._workers.spawn(self._config, layouts, deadline)
