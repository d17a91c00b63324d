"""How an engine changes plans between two batches: another batch split over the same
instances (`replan`), or other instances (`reconfigure`: workers re-pinned and re-threaded in
place, spares taken over, new workers started only when the pool is too small); and spare
workers started ahead (`reserve`) so that later plans switch in place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from packrat.errors import PlanError, WorkerError
from packrat.pool.core import EngineCore, EngineState, check_plan, plan_cores
from packrat.pool.messages import Command, Reconfigure, Reconfigured, ReconfigureFailed
from packrat.pool.workers import failure, new_layouts
from packrat.types import InstanceSpec, Layout, Plan


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

        A source whose workers cannot move (`ModelSource.moves_in_place`: OpenVINO) is served
        by workers started on each instance's own threads and cores instead: an instance
        whose layout changes takes over an idle worker started on that layout, else a new one
        is started on it (seconds). The workers it leaves stay as spares while the pool holds
        no more than `pool_size` (as started, or as `reserve` last raised it); the others stop.

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
            if not self._workers.moves_in_place:
                spawned = self._take_over_or_start(plan, started)
                self._plan = plan
                return Reconfiguration(0, spawned, time.monotonic() - started)
            extra = plan.layout[len(self._workers.processes) :]
            spawned = self._start(plan, extra, started)
            moves = [
                (k, instance)
                for k, instance in enumerate(plan.instances)
                if self._workers.layouts[k] != plan.layout[k]
            ]
            if moves:
                self._retune(moves)
            self._plan = plan
            return Reconfiguration(len(moves), spawned, time.monotonic() - started)

    def _take_over_or_start(self, plan: Plan, started: float) -> int:
        """Give each instance of `plan` a worker started on its layout: the one in its place,
        an idle one, or a new one; then stop the idle workers beyond the pool's size. Returns
        how many workers started."""
        layouts = self._workers.layouts
        order: list[int | None] = [
            k if k < len(layouts) and layouts[k] == wanted else None
            for k, wanted in enumerate(plan.layout)
        ]
        idle = [k for k in range(len(layouts)) if k not in order]
        for k, wanted in enumerate(plan.layout):
            if order[k] is None:
                match = next((j for j in idle if layouts[j] == wanted), None)
                if match is not None:
                    order[k] = match
                    idle.remove(match)
        missing = [k for k, j in enumerate(order) if j is None]
        first_new = len(layouts)
        self._start(plan, [plan.layout[k] for k in missing], started)
        for offset, k in enumerate(missing):
            order[k] = first_new + offset
        self._workers.arrange([j for j in order if j is not None])
        if self._wanted:  # idle workers on a layout no later plan uses (after a reserve)
            self._stop_idle_outside(len(plan.instances), self._wanted)
        keep = max(self._pool_size, len(plan.instances))
        if len(self._workers.processes) > keep:
            self._workers.stop_from(keep, self._config.stop_timeout_s)
        return len(missing)

    def _start(self, plan: Plan, layouts: Sequence[Layout], started: float) -> int:
        """Start workers on `layouts` after the others; how many. WorkerError (the old plan
        still serving) if one fails to start."""
        if not layouts:
            return 0
        try:
            deadline = started + self._config.start_timeout_s
            self._workers.spawn(self._config, layouts, deadline)
        except WorkerError as exc:
            raise WorkerError(
                f"switching to plan {plan.describe()} failed, "
                f"{self._plan.describe()} still serves: {exc}"
            ) from exc
        return len(layouts)

    def reserve(self, pool_size: int, spares: Sequence[Layout] = ()) -> int:
        """Start spare workers (one thread over the plan's cores, idle) until the pool has
        `pool_size` workers, so that later plans with that many instances switch in place.
        For a source whose workers cannot move, keep the idle workers on a layout of `spares`
        (those later plans use), stop the others (after a move, those on the old cores), and
        start one on each layout of `spares` that no worker has, as far as the pool has room
        for that many workers in all, which it keeps from then on: while a worker serves on a
        layout left out, the layout it takes the place of starts at the switch that leaves
        it idle, and it stops then. Takes seconds per new worker, during which no batch runs.
        Returns how many started.

        Raises WorkerError if a worker fails to start; the spares started are stopped then,
        and the pool serves on as it was (a later plan that needs more workers starts them).
        """
        with self._lock:
            self._check_running()
            if self._workers.moves_in_place:
                layouts = [self._spare_layout()] * (pool_size - len(self._workers.processes))
                pool_size = max(self._pool_size, pool_size)
            else:
                self._stop_idle_outside(len(self._plan.instances), spares)
                self._wanted = frozenset(spares)
                room = max(pool_size, len(self._wanted)) - len(self._workers.processes)
                layouts = new_layouts(spares, self._workers.layouts)[: max(room, 0)]
            if layouts:
                self._workers.spawn(
                    self._config, layouts, time.monotonic() + self._config.start_timeout_s
                )
            if self._workers.moves_in_place:
                self._pool_size = max(pool_size, len(self._workers.processes))
            else:  # a worker serving on a layout left out stops after the next switch
                self._pool_size = max(pool_size, len(self._wanted))
            return len(layouts)

    def _stop_idle_outside(self, serving: int, spares: Iterable[Layout]) -> None:
        """Stop the idle workers (after the first `serving`) whose layout `spares` does not
        name (one per layout)."""
        layouts, wanted = self._workers.layouts, set(spares)
        kept: dict[Layout, int] = {}
        for k in range(serving, len(layouts)):
            if layouts[k] in wanted:
                kept.setdefault(layouts[k], k)
        self._workers.arrange([*range(serving), *kept.values()])
        self._workers.stop_from(serving + len(kept), self._config.stop_timeout_s)

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
