"""The engine: run one plan as pinned worker processes and serve batches with it.

`Engine(source, plan).start()` spawns one worker per instance of an allocated plan, all at once,
and waits until every worker is ready. `infer(requests)` splits a batch of exactly `plan.batch`
requests among the instances in plan order, sends every sub-batch before waiting for any reply,
and returns the outputs in request order. The bytes of request and output tensors cross
through each worker's shared-memory arenas, not its pipe (`packrat.pool.arena`); the outputs
returned are the engine's own copies.

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
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from packrat.errors import PlanError, TopologyError, WorkerError
from packrat.models.base import ModelSource
from packrat.pool.arena import ArenaPair
from packrat.pool.config import EngineConfig
from packrat.pool.memory import MemoryReport, memory_report
from packrat.pool.messages import (
    BatchDone,
    BatchFailed,
    Command,
    Describe,
    ExampleRequests,
    Examples,
    Measure,
    Measured,
    MeasureFailed,
    Ready,
    Reconfigure,
    Reconfigured,
    ReconfigureFailed,
    RunBatch,
    WorkerFailed,
    WorkerInfo,
    WorkerSpec,
)
from packrat.pool.process import (
    ChildProcess,
    Died,
    Outcome,
    Undecodable,
    spawn_child,
    stop_children,
    wait_replies,
)
from packrat.pool.split import batch_slices
from packrat.pool.weights import ensure_weights_file
from packrat.pool.worker import run_worker
from packrat.stats import SamplingPolicy
from packrat.types import InstanceSpec, Plan

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Reconfiguration:
    """What `Engine.reconfigure` did: workers re-pinned in place, workers started, seconds."""

    retuned: int
    spawned: int
    took_s: float


class EngineState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DEGRADED = "degraded"  # a worker was lost in a batch; replace_lost() restores it
    BROKEN = "broken"  # a worker died or timed out elsewhere; only close() is left
    CLOSED = "closed"


class Engine:
    """One plan's instances as pinned worker processes.

    `plan` must be allocated: every instance needs its `cores` (see `packrat.topology`), all of
    them CPUs this process may use. Instances may share CPUs (useful on small test machines),
    though an allocated plan gives each its own. Use as a context manager, or call `start()`
    and `close()`.

    visible_cores: every CPU the model's instances may be placed on (default: every CPU this
        process may use). Workers boot seeing them, so the thread pools that runtimes size
        once per process (OpenMP's count, OpenVINO's TBB) fit the largest instance the model
        can have, not the whole machine: on a 128-core server, a two-thread instance of a
        model given 16 cores must not start a pool of 128 threads. Widened by any plan that
        places an instance beyond them.
    """

    def __init__(
        self,
        source: ModelSource,
        plan: Plan,
        config: EngineConfig | None = None,
        *,
        pool_size: int | None = None,
        visible_cores: Sequence[int] | None = None,
    ) -> None:
        check_plan(plan)
        self._source = source
        self._plan = plan
        usable = visible_cores if visible_cores is not None else os.sched_getaffinity(0)
        self._visible_cores = frozenset(usable) | _plan_cores(plan)
        self._config = config if config is not None else EngineConfig()
        # Workers started up front: the plan's instances, then spares that later plans with
        # more instances take over without waiting for a model to load.
        self._pool_size = max(len(plan.instances), pool_size or 0)
        self._workers: list[ChildProcess] = []
        self._layouts: list[tuple[int, tuple[int, ...]]] = []  # (threads, cores) per worker
        self._lost: set[int] = set()  # workers lost in a batch, to replace
        self._weights_path: str | None = None
        self._ready: tuple[Ready, ...] = ()
        self._start_s: float | None = None
        self._state = EngineState.NEW
        self._broken_reason = ""
        self._next_batch_id = 0
        self._lock = threading.Lock()
        # Stops the workers if the engine is dropped without close(); close() runs it too.
        self._finalizer = weakref.finalize(
            self, stop_children, self._workers, self._config.stop_timeout_s
        )

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def pids(self) -> list[int]:
        """Pids of the plan's workers in plan order (empty before `start()`)."""
        return [worker.pid for worker in self._workers[: len(self._plan.instances)]]

    @property
    def pool_pids(self) -> list[int]:
        """Pids of every worker, the spares after the plan's."""
        return [worker.pid for worker in self._workers]

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
                stop_children(self._workers, timeout_s=0.0)
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
        a worker dies or times out (the engine is then broken).
        """
        instances = len(self._plan.instances)
        if len(sizes) != instances or any(s < 0 for s in sizes):
            raise ValueError(
                f"sizes must give one count >= 0 per instance ({instances}), got {list(sizes)}"
            )
        if sum(sizes) != len(requests):
            raise ValueError(f"sizes {list(sizes)} do not add up to {len(requests)} requests")
        with self._lock:
            self._check_running()
            batch_id = self._next_batch_id
            self._next_batch_id += 1
            items = list(requests)
            used = [
                (k, part)
                for k, part in enumerate(batch_slices(sizes, allow_empty=True))
                if part.stop > part.start
            ]
            workers = [self._workers[k] for k, _ in used]
            commands: list[Command] = [RunBatch(batch_id, tuple(items[part])) for _, part in used]
            lost: dict[int, str] = {}
            outcomes = self._exchange(workers, commands, self._config.batch_timeout_s, lost)
            results: list[SubBatch] = []
            for (k, part), worker, outcome in zip(used, workers, outcomes, strict=True):
                expected = part.stop - part.start
                if isinstance(outcome, BatchDone) and outcome.batch_id == batch_id:
                    if len(outcome.outputs) == expected:
                        results.append(
                            SubBatch(
                                k, part.start, part.stop, outcome.outputs, None, outcome.compute_s
                            )
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
                    error = self._failure(worker, outcome, self._config.batch_timeout_s)
                results.append(SubBatch(k, part.start, part.stop, (), error))
            return results

    @property
    def lost(self) -> list[int]:
        """Indices of the workers lost in a batch and not yet replaced."""
        return sorted(self._lost)

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
            stop_children([self._workers[k] for k in lost], timeout_s=0.0)
            layouts = [self._layouts[k] for k in lost]
            try:
                self._spawn(layouts, time.monotonic() + self._config.start_timeout_s, at=lost)
            except WorkerError as exc:
                self._state = EngineState.BROKEN
                self._broken_reason = f"replacing lost workers failed: {exc}"
                raise
            self._lost.clear()
            self._state = EngineState.RUNNING
            return lost

    def replan(self, plan: Plan) -> None:
        """Serve `plan` from now on: the same instances (threads and cores, in order) with
        another batch split, e.g. the plan for another batch size over the same workers."""
        if plan.layout != self._plan.layout:
            raise PlanError(
                f"replan keeps the instances: {plan.describe()} on {list(plan.layout)} is not "
                f"{self._plan.describe()} on {list(self._plan.layout)}"
            )
        with self._lock:
            self._plan = plan

    def reconfigure(self, plan: Plan) -> Reconfiguration:
        """Serve `plan` from now on, whatever its instances: between two batches, each worker
        whose threads or cores change is re-pinned and re-threaded in place (the model stays
        loaded, so this takes milliseconds); spare workers take the extra instances of a plan
        with more instances than before, and new workers are started (seconds) only if the
        pool is too small. Workers left over stay idle as spares.

        Raises TopologyError/PlanError for a plan that is not allocated on usable CPUs,
        WorkerError if a new worker fails to start (nothing changed then: the workers started
        are stopped and the old plan keeps serving) or a worker fails to change (the engine
        is then broken).
        """
        check_plan(plan)
        with self._lock:
            self._check_running()
            self._visible_cores |= _plan_cores(plan)
            started = time.monotonic()
            spawned = 0
            extra = plan.layout[len(self._workers) :]
            if extra:
                try:
                    self._spawn(extra, started + self._config.start_timeout_s)
                except WorkerError as exc:
                    raise WorkerError(
                        f"switching to plan {plan.describe()} failed, "
                        f"{self._plan.describe()} still serves: {exc}"
                    ) from exc
                spawned = len(extra)
            moves = [
                (k, instance)
                for k, instance in enumerate(plan.instances)
                if self._layouts[k] != plan.layout[k]
            ]
            if moves:
                self._retune(moves)
            self._plan = plan
            return Reconfiguration(len(moves), spawned, time.monotonic() - started)

    def reserve(self, pool_size: int) -> int:
        """Start spare workers (one thread over the plan's cores, idle) until the pool has
        `pool_size` workers, so that later plans with that many instances switch in place.
        Takes seconds per new worker, during which no batch runs. Returns how many started.

        Raises WorkerError if a worker fails to start; the spares started are stopped then,
        and the pool serves on as it was (a later plan that needs more workers starts them).
        """
        with self._lock:
            self._check_running()
            missing = pool_size - len(self._workers)
            if missing <= 0:
                return 0
            self._spawn(
                [self._spare_layout()] * missing,
                time.monotonic() + self._config.start_timeout_s,
            )
            return missing

    def example_requests(self, batch_size: int) -> list[Any]:
        """`batch_size` example requests made by the model's handler (in instance 0)."""
        with self._lock:
            self._check_running()
            worker = self._workers[0]
            (outcome,) = self._exchange([worker], [Examples(batch_size)], None)
            if isinstance(outcome, ExampleRequests):
                return list(outcome.requests)
            raise WorkerError(self._failure(worker, outcome, None))

    def measure(self, instance: int, batch_size: int, policy: SamplingPolicy) -> list[float]:
        """Timed inference latencies (ms) of `batch_size` example requests on one instance.

        Runs inside the worker (see `worker.measure_inference`); other instances stay idle.
        """
        if not 0 <= instance < len(self._plan.instances):
            raise ValueError(
                f"instance must be in [0, {len(self._plan.instances)}), got {instance}"
            )
        with self._lock:
            self._check_running()
            worker = self._workers[instance]
            command = Measure(batch_size, policy)
            timeout_s = self._measure_timeout_s(policy)
            (outcome,) = self._exchange([worker], [command], timeout_s)
            if isinstance(outcome, Measured):
                return list(outcome.samples_ms)
            raise WorkerError(self._failure(worker, outcome, timeout_s))

    def measure_all(self, policy: SamplingPolicy) -> list[list[float]]:
        """Every instance times its own plan batch, all at the same time (under contention).

        Returns each instance's latencies (ms) in plan order.
        """
        with self._lock:
            self._check_running()
            commands: list[Command] = [
                Measure(instance.batch, policy) for instance in self._plan.instances
            ]
            timeout_s = self._measure_timeout_s(policy)
            workers = self._workers[: len(commands)]
            outcomes = self._exchange(workers, commands, timeout_s)
            results: list[list[float]] = []
            errors: list[str] = []
            for worker, outcome in zip(workers, outcomes, strict=True):
                if isinstance(outcome, Measured):
                    results.append(list(outcome.samples_ms))
                else:
                    errors.append(self._failure(worker, outcome, timeout_s))
            if errors:
                raise WorkerError("; ".join(errors))
            return results

    def describe(self) -> list[WorkerInfo]:
        """Each plan worker's torch thread counts and per-thread CPU affinity, in plan order."""
        with self._lock:
            self._check_running()
            timeout_s = self._config.batch_timeout_s
            workers = self._workers[: len(self._plan.instances)]
            commands: list[Command] = [Describe() for _ in workers]
            outcomes = self._exchange(workers, commands, timeout_s)
            infos: list[WorkerInfo] = []
            errors: list[str] = []
            for worker, outcome in zip(workers, outcomes, strict=True):
                if isinstance(outcome, WorkerInfo):
                    infos.append(outcome)
                else:
                    errors.append(self._failure(worker, outcome, timeout_s))
            if errors:
                raise WorkerError("; ".join(errors))
            return infos

    def memory(self) -> MemoryReport:
        """RSS and PSS of the worker processes (PSS sums to the memory they use together)."""
        with self._lock:
            self._check_running()
            try:
                return memory_report(self.pids)
            except ProcessLookupError as exc:
                raise WorkerError(f"a worker exited: {exc}") from exc

    def close(self) -> None:
        """Stop every worker: Stop, wait `stop_timeout_s`, then terminate, then kill. Idempotent.

        Safe to call from another thread while a call waits on a hung worker: the workers are
        killed, which ends that call with WorkerError.
        """
        if not self._lock.acquire(timeout=self._config.stop_timeout_s):
            for worker in self._workers:
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

    # --- internals ------------------------------------------------------------------------

    def _start_workers(self, deadline: float) -> None:
        if self._config.share_weights:
            path = ensure_weights_file(
                self._source, self._config.resolved_weights_dir(), _remaining(deadline)
            )
            self._weights_path = str(path)
        layouts = list(self._plan.layout)
        layouts += [self._spare_layout()] * (self._pool_size - len(layouts))
        self._ready = self._spawn(layouts, deadline)

    def _spare_layout(self) -> tuple[int, tuple[int, ...]]:
        """A spare worker's: one thread, over every core of the plan."""
        return 1, tuple(sorted({c for i in self._plan.instances for c in i.cores}))

    def _spawn(
        self,
        layouts: Sequence[tuple[int, tuple[int, ...]]],
        deadline: float,
        at: Sequence[int] | None = None,
    ) -> tuple[Ready, ...]:
        """Start one worker per (threads, cores), after the existing ones or in place of the
        workers at indices `at`, and wait until all of them are ready.

        Raises WorkerError (with the worker's own message) otherwise, after stopping every
        worker it started and dropping those it added, so the pool is as it was (but for
        stopped workers at `at`). A worker still booting must not outlive a failed start: it
        would send Ready later, and the next command to it would read that for its reply.
        """
        first = len(self._workers)
        indices = list(at) if at is not None else list(range(first, first + len(layouts)))
        parent_pid = os.getpid()
        started: list[ChildProcess] = []
        try:
            for index, (threads, cores) in zip(indices, layouts, strict=True):
                arenas = self._new_arenas(index)
                spec = WorkerSpec(
                    index,
                    threads,
                    cores,
                    self._source,
                    self._weights_path,
                    parent_pid,
                    keep_freed_memory=self._config.keep_freed_memory,
                    visible_cores=tuple(sorted(self._visible_cores)),
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
                if index < len(self._workers):
                    self._workers[index], self._layouts[index] = child, (threads, cores)
                else:
                    self._workers.append(child)
                    self._layouts.append((threads, cores))
            return self._wait_ready(started, deadline)
        except BaseException:
            # No grace: booting workers would only read Stop once they are ready.
            stop_children(started, timeout_s=0.0)
            del self._workers[first:], self._layouts[first:]
            raise

    def _new_arenas(self, index: int) -> ArenaPair | None:
        """A new worker's shared memory for its requests and outputs; None (the pipe carries
        them) if the config says so or the system has no anonymous shared memory."""
        if not self._config.shared_tensors:
            return None
        try:
            return ArenaPair.create(f"instance-{index}")
        except OSError as exc:
            logger.warning("instance %d sends tensors through its pipe: %s", index, exc)
            return None

    def _wait_ready(self, workers: Sequence[ChildProcess], deadline: float) -> tuple[Ready, ...]:
        """Each worker's Ready, in order; WorkerError at the first failure or the deadline."""
        timeout_s = _remaining(deadline)
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
                raise WorkerError(self._failure(worker, outcome, timeout_s))
        if late:
            raise WorkerError(
                f"{len(late)} worker(s) not ready within {self._config.start_timeout_s:g} s: "
                + ", ".join(late)
            )
        return tuple(ready)

    def _retune(self, moves: Sequence[tuple[int, InstanceSpec]]) -> None:
        """Send each moved worker its new threads and cores, all at once, and wait for all."""
        workers = [self._workers[k] for k, _ in moves]
        commands: list[Command] = [Reconfigure(i.threads, i.cores) for _, i in moves]
        timeout_s = self._config.batch_timeout_s
        outcomes = self._exchange(workers, commands, timeout_s)
        errors: list[str] = []
        for (k, instance), worker, outcome in zip(moves, workers, outcomes, strict=True):
            if isinstance(outcome, Reconfigured):
                self._layouts[k] = (instance.threads, instance.cores)
                worker.detail = f"cores {list(instance.cores)}"
            elif isinstance(outcome, ReconfigureFailed):
                errors.append(f"{worker.describe()} failed to change: {outcome.message}")
            else:
                errors.append(self._failure(worker, outcome, timeout_s))
        if errors:
            # Half-moved workers would overlap others' cores: only close() is safe now.
            self._state = EngineState.BROKEN
            self._broken_reason = "; ".join(errors)
            raise WorkerError(self._broken_reason)

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
        for worker, command in zip(workers, commands, strict=True):
            worker.send(command)  # a closed pipe marks the worker gone: it yields Died below
        outcomes = wait_replies(workers, timeout_s)
        result: list[Outcome | None] = []
        for position, worker in enumerate(workers):
            outcome = outcomes.get(position)
            if outcome is None or isinstance(outcome, Died):
                reason = self._failure(worker, outcome, timeout_s)
                if lost is None:
                    self._state = EngineState.BROKEN
                    self._broken_reason = reason
                else:
                    index = self._workers.index(worker)
                    lost[index] = reason
                    self._lost.add(index)
                    if self._state is EngineState.RUNNING:
                        self._state = EngineState.DEGRADED
            result.append(outcome)
        return result

    def _failure(
        self, worker: ChildProcess, outcome: Outcome | None, timeout_s: float | None
    ) -> str:
        """One line saying what went wrong with `worker`'s reply."""
        where = worker.describe()
        if outcome is None:
            return f"{where} did not reply within {timeout_s} s"
        if isinstance(outcome, Died):
            return f"{where} died with exit code {outcome.exitcode}"
        if isinstance(outcome, BatchFailed | MeasureFailed):
            return f"{where} failed: {outcome.error_type}: {outcome.message}"
        if isinstance(outcome, WorkerFailed):
            return (
                f"{where} failed to {outcome.phase.value}: {outcome.error_type}: {outcome.message}"
            )
        if isinstance(outcome, Undecodable):
            return f"{where} sent an undecodable reply: {outcome.message}"
        return f"{where} sent an unexpected {type(outcome).__name__}"

    def _measure_timeout_s(self, policy: SamplingPolicy) -> float | None:
        """How long a measurement may take: the policy's time cap plus, per run it may make
        regardless of that cap (warmup, min_runs, one more), one `batch_timeout_s`."""
        if self._config.batch_timeout_s is None:
            return None
        runs = policy.warmup_runs + policy.min_runs + 1
        return policy.max_time_s + runs * self._config.batch_timeout_s

    def _check_running(self) -> None:
        if self._state is EngineState.RUNNING:
            return
        if self._state is EngineState.BROKEN:
            raise WorkerError(f"engine is broken ({self._broken_reason}); close it and start anew")
        if self._state is EngineState.DEGRADED:
            raise WorkerError(f"engine lost workers {self.lost}; call replace_lost() first")
        raise WorkerError(f"engine is {self._state.value}, not running")


def _plan_cores(plan: Plan) -> frozenset[int]:
    return frozenset(core for instance in plan.instances for core in instance.cores)


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


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
