"""How an engine changes plans between two batches: another batch split over the same
instances (`replan`), or other instances (`reconfigure`: workers re-pinned and re-threaded in
place, spares taken over, new workers started only when the pool is too small); and spare
workers started ahead (`reserve`) so that later plans switch in place.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from packrat.errors import PlanError, WorkerError
from packrat.pool.core import EngineCore, EngineState, check_plan, plan_cores
from packrat.pool.messages import Command, Reconfigure, Reconfigured, ReconfigureFailed
from packrat.pool.workers import failure
from packrat.types import InstanceSpec, Plan


@dataclass(frozen=True)
class Reconfiguration:
    """What `Engine.reconfigure` did: workers re-pinned in place, workers started, seconds."""

    retuned: int
    spawned: int
    took_s: float


class Reconfiguring(EngineCore):
    """The engine's changes of plan (see `packrat.pool.engine.Engine`)."""

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
            self._workers.visible_cores |= plan_cores(plan)
            started = time.monotonic()
            spawned = 0
            extra = plan.layout[len(self._workers.processes) :]
            if extra:
                try:
                    deadline = started + self._config.start_timeout_s
                    self._workers.spawn(self._config, extra, deadline)
                except WorkerError as exc:
                    raise WorkerError(
                        f"switching to plan {plan.describe()} failed, "
                        f"{self._plan.describe()} still serves: {exc}"
                    ) from exc
                spawned = len(extra)
            moves = [
                (k, instance)
                for k, instance in enumerate(plan.instances)
                if self._workers.layouts[k] != plan.layout[k]
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
            missing = pool_size - len(self._workers.processes)
            if missing <= 0:
                return 0
            self._workers.spawn(
                self._config,
                [self._spare_layout()] * missing,
                time.monotonic() + self._config.start_timeout_s,
            )
            return missing

    def _retune(self, moves: Sequence[tuple[int, InstanceSpec]]) -> None:
        """Send each moved worker its new threads and cores, all at once, and wait for all."""
        workers = [self._workers.processes[k] for k, _ in moves]
        commands: list[Command] = [Reconfigure(i.threads, i.cores) for _, i in moves]
        timeout_s = self._config.batch_timeout_s
        outcomes = self._exchange(workers, commands, timeout_s)
        errors: list[str] = []
        for (k, instance), worker, outcome in zip(moves, workers, outcomes, strict=True):
            if isinstance(outcome, Reconfigured):
                self._workers.layouts[k] = (instance.threads, instance.cores)
                worker.detail = f"cores {list(instance.cores)}"
            elif isinstance(outcome, ReconfigureFailed):
                errors.append(f"{worker.describe()} failed to change: {outcome.message}")
            else:
                errors.append(failure(worker, outcome, timeout_s))
        if errors:
            # Half-moved workers would overlap others' cores: only close() is safe now.
            self._state = EngineState.BROKEN
            self._broken_reason = "; ".join(errors)
            raise WorkerError(self._broken_reason)
