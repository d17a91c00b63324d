"""One served model version: a dynamic batcher in front of an instance pool (`Engine`).

Data path: `infer(request)` -> `Batcher.submit` -> one batch at a time -> the model's policy
may switch plans for it (`_follow`: workers re-pinned in place) -> `best_split` picks how many
requests each running instance serves -> `Engine.run_split` (in a thread, so the event loop
keeps accepting requests) -> each request gets its own output or error.

Changes of plan from outside (`pin`, `release`, `move`: the management API) take the same
lock as a batch, so they happen between two batches; queued requests wait and none fails.

Errors, per request: a model error in one instance's sub-batch fails exactly the requests of
that sub-batch with InferenceFailed (the model's message); the rest of the batch succeeds. A
worker that dies or misses the batch deadline (`EngineConfig.batch_timeout_s`) during a batch
fails only its own sub-batch's requests, with Unavailable (503: they may be retried); the
model is then `degraded` until a fresh worker with the same threads and cores has replaced
it (seconds: it loads the model), which happens before the next batch runs, so later requests
wait instead of failing. If a replacement cannot start, or a worker is lost while plans are
switched, the pool is broken: the model stops being `ready` and every request gets
Unavailable (unregister and register the model again to restart it). The same holds if the
batcher's loop dies of a bug: every request it held gets Unavailable. Either way the model's
state is then `failed`. A switch whose new workers fail to start changes nothing: it is
logged, and the old plan keeps serving.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packrat.controller.batching import BatchingConfig
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.planning import Planning
from packrat.controller.policy import PlanPolicy, PolicyConfig, PolicyKind
from packrat.controller.split_sizes import MemoizedSplit
from packrat.controller.step import Action, Reason, step
from packrat.errors import ModelError, PackratError, WorkerError
from packrat.models.base import ModelIdentity, ModelSource
from packrat.models.inputs import InputSpec
from packrat.optimizer.table import LatencyTable
from packrat.pool.config import EngineConfig
from packrat.pool.engine import Engine, EngineState, SubBatch
from packrat.pool.protocol import InstancePool
from packrat.server.api import BadRequest, InferenceFailed, Unavailable
from packrat.server.batcher import Batcher
from packrat.topology import format_cpu_list
from packrat.types import Plan

logger = logging.getLogger(__name__)


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

SWITCH_LOG = 10_000
"""Switches kept for `switch_log()` (all are counted); `describe()` shows the last few."""
DESCRIBED_SWITCHES = 10


class RuntimeState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"  # started, then unable to serve: its batch loop died or its pool broke
    STOPPING = "stopping"
    STOPPED = "stopped"


class ModelRuntime:
    """A model version served by pinned instances behind a dynamic batcher (`ServedModel`).

    plan: the instances to start with, allocated (every instance has its cores).
    table: the model's latency profile, used to split each batch among the instances; None
        splits by thread share (`proportional_split`).
    batching: the batcher's settings; engine_config: the pool's.
    planning: where other plans come from (needed to follow the load, and for `pin`,
        `release` and `move`); policy: how the plan follows the load (`PolicyConfig`), None
        for a pinned plan; estimator: the estimator's settings when released to "follow"
        (default: the policy's). pool: the instances, serving `plan` (`InstancePool`; default:
        an `Engine` of `pool_size` workers, spares beyond the plan's instances, under
        `engine_config`).

    Metrics hooks: `add_listener(fn)` for a `BatchRecord` per batch, and the counters
    `queue_depth`, `in_flight`, `last_batch_sizes`, `busy_s`, `batches_total`,
    `requests_total`.
    """

    def __init__(
        self,
        name: str,
        version: str,
        source: ModelSource,
        plan: Plan,
        table: LatencyTable | None = None,
        *,
        batching: BatchingConfig | None = None,
        engine_config: EngineConfig | None = None,
        planning: Planning | None = None,
        policy: PolicyConfig | None = None,
        estimator: EstimatorConfig | None = None,
        pool_size: int | None = None,
        pool: InstancePool | None = None,
        backend: Mapping[str, Any] | None = None,
        loaded_at_startup: bool = False,
    ) -> None:
        self._name = name
        self._loaded_at_startup = loaded_at_startup
        self._batch_timeout_s = (engine_config or EngineConfig()).batch_timeout_s
        self._started_at_unix_s: float | None = None
        self._backend = dict(backend) if backend is not None else None
        self._version = version
        self._source = source
        self._table = table
        self._engine: InstancePool = (
            pool
            if pool is not None
            else Engine(
                source,
                plan,
                engine_config,
                pool_size=pool_size,
                visible_cores=None if planning is None else planning.topology.cpu_ids(),
            )
        )
        self._planning = planning
        self._policy_config = policy
        self._policy = self._make_policy(policy)
        if estimator is None:
            estimator = policy.estimator if policy is not None else EstimatorConfig()
        self._estimator = estimator
        self._plan_lock = asyncio.Lock()  # held by each batch and each change of plan
        self._switch_listeners: list[SwitchListener] = []
        self._switches: collections.deque[Switch] = collections.deque(maxlen=SWITCH_LOG)
        self._switches_total = 0
        self._restart_listeners: list[RestartListener] = []
        self._restarts_total = 0
        self._replacing: asyncio.Task[None] | None = None
        self._spawn_failed_s: float | None = None  # monotonic time of the last failed start
        self._batcher: Batcher[Any, Any] = Batcher(
            self._run_batch, batching, predict_s=self._predicted_batch_s
        )
        self._state = RuntimeState.NEW
        self._identity: ModelIdentity | None = None
        self._input_spec = _declared_input_spec(source)
        self._splits = MemoizedSplit(table)
        self._listeners: list[BatchListener] = []
        self._busy_s = [0.0] * len(plan.instances)
        self._last_batch_sizes: tuple[int, ...] = ()
        self._batches_total = 0
        self._requests_total = 0

    # --- ServedModel ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def input_spec(self) -> InputSpec | None:
        """The source's declared input, else (once started) one inferred from an example
        request of the model's handler; None if neither says."""
        return self._input_spec

    @property
    def takes_raw_requests(self) -> bool:
        """Whether requests reach the handler as the client sent them (a TorchServe archive)."""
        return self._source.takes_raw_requests

    @property
    def ready(self) -> bool:
        """Started, not stopping, and taking requests: every instance alive, or a lost one
        being replaced (`degraded`; requests wait for it)."""
        return (
            self._state is RuntimeState.RUNNING
            and self._engine.state in (EngineState.RUNNING, EngineState.DEGRADED)
            and self._batcher.accepting
        )

    @property
    def degraded(self) -> bool:
        """An instance was lost and is being replaced."""
        return self._engine.state is EngineState.DEGRADED

    async def infer(self, request: Any) -> Any:
        """The model's output for one request, batched with concurrent ones.

        Raises InferenceFailed if the model raised on this request's sub-batch, Unavailable if
        the model is not running, its queue is full or an instance died.
        """
        output, _ = await self.infer_timed(request)
        return output

    async def infer_timed(self, request: Any) -> tuple[Any, float]:
        """`infer`, and the seconds the instance computed on this request's sub-batch."""
        if not self.ready:
            why = {
                RuntimeState.RUNNING: "it is not taking requests",
                RuntimeState.FAILED: self.failure,
                RuntimeState.STOPPING: "the server is shutting down",
                RuntimeState.STOPPED: "it has stopped",
            }.get(self.state) or "not running"
            raise Unavailable(f"model {self._label} is unavailable ({why})")
        result: tuple[Any, float] = await self._batcher.submit(request)
        return result

    def describe(self) -> Mapping[str, Any]:
        """JSON-ready: name, version, state, model identity, input, plan, instances, batching."""
        plan = self._engine.plan
        pids = self._engine.pids
        config = self._batcher.config
        return {
            "name": self._name,
            "version": self._version,
            "state": self.state.value,
            "failure": self.failure,
            "ready": self.ready,
            "degraded": self.degraded,
            "instances_restarted": self._restarts_total,
            "started_at_unix_s": self._started_at_unix_s,
            "loaded_at_startup": self._loaded_at_startup,
            "model": {
                "source": self._source.name,
                "content_hash": None if self._identity is None else self._identity.content_hash,
            },
            "input_spec": None if self._input_spec is None else self._input_spec.to_json(),
            "requests": "torchserve" if self.takes_raw_requests else "tensor",
            "backend": self._backend,
            "plan": {
                "describe": plan.describe(),
                "cores": plan.cores,
                "batch": plan.batch,
                "predicted_latency_ms": _finite_or_none(plan.latency_ms),
            },
            "instances": [
                {
                    "threads": instance.threads,
                    "batch": instance.batch,
                    "cores": list(instance.cores),
                    "pid": pids[k] if k < len(pids) else None,
                    "rss_bytes": _rss_bytes(pids[k]) if k < len(pids) else None,
                }
                for k, instance in enumerate(plan.instances)
            ],
            "batching": {
                "max_batch_size": config.max_batch_size,
                "max_batch_delay_ms": config.max_batch_delay_ms,
                "max_queue": config.max_queue,
                "max_queue_wait_ms": config.max_queue_wait_ms,
                "overloaded": self._batcher.overloaded,
                "queue_depth": self._batcher.queue_depth,
                "batch_timeout_s": self._batch_timeout_s,
            },
            "split": "profile" if self._table is not None else "thread share",
            "policy": self.policy,
            "estimator": self._estimator.describe(),
            "switches_total": self._switches_total,
            "recent_switches": [s.to_json() for s in self.switches[-DESCRIBED_SWITCHES:]],
        }

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start every instance (in a thread: it takes seconds) and the batcher.

        Raises WorkerError if an instance fails to start (no process is left then), ModelError
        if the model's identity cannot be read.
        """
        if self._state is not RuntimeState.NEW:
            raise WorkerError(f"model {self._label} cannot start: it is {self._state.value}")
        self._state = RuntimeState.STARTING
        try:
            self._identity = await asyncio.to_thread(self._source.identity)
            await asyncio.to_thread(self._engine.start)
            if self._input_spec is None and not self.takes_raw_requests:
                examples = await asyncio.to_thread(self._engine.example_requests, 1)
                self._input_spec = _inferred_input_spec(examples[0]) if examples else None
            await self._batcher.start()
        except BaseException:
            await asyncio.to_thread(self._engine.close)
            self._state = RuntimeState.STOPPED
            raise
        self._state = RuntimeState.RUNNING
        self._started_at_unix_s = time.time()
        logger.info("model %s serving with plan %s", self._label, self._engine.plan.describe())

    async def stop(self, drain: bool = True) -> None:
        """Stop taking requests, finish queued and running ones (drain=True; else they get
        Unavailable), then stop every instance. Idempotent."""
        if self._state in (RuntimeState.STOPPING, RuntimeState.STOPPED):
            return
        self._state = RuntimeState.STOPPING
        try:
            await self._batcher.stop(drain=drain)
            if self._replacing is not None:
                await asyncio.wait([self._replacing])
        finally:
            await asyncio.to_thread(self._engine.close)
            self._state = RuntimeState.STOPPED

    # --- metrics hooks ---------------------------------------------------------------------

    def add_listener(self, listener: BatchListener) -> None:
        """Call `listener(record)` with a `BatchRecord` after each batch.

        Listeners run on the event loop and must be quick; one that raises is logged.
        """
        self._listeners.append(listener)

    @property
    def state(self) -> RuntimeState:
        """Where the model is in its life: FAILED once, started, it can serve no more
        (`failure` says why; unregister and register it again to restart it)."""
        if self._state is RuntimeState.RUNNING and self.failure is not None:
            return RuntimeState.FAILED
        return self._state

    @property
    def failure(self) -> str | None:
        """Why the model can serve no more although nobody stopped it, None if it can."""
        if self._batcher.failure is not None:
            return f"its batch loop failed: {self._batcher.failure}"
        if self._engine.state is EngineState.BROKEN:
            return "its instance pool is broken"
        return None

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return self._batcher.queue_depth

    @property
    def in_flight(self) -> int:
        """Requests in the batch now running."""
        return self._batcher.in_flight

    @property
    def last_batch_sizes(self) -> tuple[int, ...]:
        """Requests per instance in the last batch run (empty before the first)."""
        return self._last_batch_sizes

    @property
    def busy_s(self) -> tuple[float, ...]:
        """Seconds each instance has spent computing (its handler's time, timed in the
        worker), in plan order."""
        return tuple(self._busy_s)

    @property
    def batches_total(self) -> int:
        return self._batches_total

    @property
    def requests_total(self) -> int:
        return self._requests_total

    @property
    def plan(self) -> Plan:
        return self._engine.plan

    def split(self, batch: int) -> tuple[list[int], float]:
        """Requests per instance for a batch of `batch`, and its predicted latency in ms
        (inf if the profile cannot predict it, nan without a profile). Memoized."""
        return self._splits.split([i.threads for i in self._engine.plan.instances], batch)

    def _predicted_batch_s(self, batch: int) -> float | None:
        """How long a batch of `batch` should take on the plan now running, by the profile,
        seconds (None without a profile or where it cannot say): admission's first estimate
        of the wait ahead of a request, before batches of that size have run."""
        if self._table is None:
            return None
        _, latency_ms = self.split(batch)
        return latency_ms / 1000.0 if math.isfinite(latency_ms) else None

    # --- changes of plan ------------------------------------------------------------------

    def add_switch_listener(self, listener: SwitchListener) -> None:
        """Call `listener(switch)` after every change of plan (on the event loop)."""
        self._switch_listeners.append(listener)

    @property
    def switches(self) -> tuple[Switch, ...]:
        """The last `SWITCH_LOG` changes of plan, oldest first."""
        return tuple(self._switches)

    def switch_log(self) -> list[dict[str, Any]]:
        """JSON-ready: the last `SWITCH_LOG` changes of plan, oldest first."""
        return [switch.to_json() for switch in self._switches]

    @property
    def switches_total(self) -> int:
        return self._switches_total

    @property
    def planning(self) -> Planning:
        """Where the model's plans come from; BadRequest if it was started without."""
        return self._require_planning("change plans")

    @property
    def policy(self) -> str:
        """How the plan is chosen: "auto", "follow", "fixed" (`PolicyKind`) or "pinned"."""
        return "pinned" if self._policy_config is None else self._policy_config.kind.value

    async def pin(self, plan: Plan) -> Plan:
        """Run `plan` from the next batch on, and keep it whatever the load (placed on the
        model's cores if it has none). Returns the plan placed. Raises BadRequest if it does
        not fit the model's cores."""
        planning = self._require_planning("pin a plan")
        placed = _placed(planning, plan)
        async with self._plan_lock:
            await self._replace_lost()
            await self._switch(placed, "pinned")
            self._policy_config, self._policy = None, None
        return placed

    async def release(self, kind: PolicyKind) -> Plan:
        """Let `kind` choose the plan from the next batch on, starting from the optimizer's
        plan for the largest batch. Returns that plan. Raises BadRequest without a profile."""
        planning = self._require_planning("choose plans")
        plan = await asyncio.to_thread(_every_optimal, planning)
        config = PolicyConfig(kind, self._estimator)
        async with self._plan_lock:
            await self._replace_lost()
            await self._switch(plan, f"policy {kind.value}")
            self._policy_config = config
            self._policy = self._make_policy(config)
            if self._policy is not None:
                self._policy.reset(planning.max_batch_size, time.monotonic())
        return plan

    async def move(self, planning: Planning) -> Plan:
        """Run on `planning`'s cores from the next batch on: the pinned plan placed anew, or
        the policy's plan for the largest batch. Workers a larger plan needs start now
        (seconds, while batches wait). Returns the new plan. Raises BadRequest if the
        pinned plan does not fit the new cores."""
        self._require_planning("change cores")
        if self._policy_config is None:
            plan = _placed(planning, _unplaced(self._engine.plan))
        else:
            plan = await asyncio.to_thread(_every_optimal, planning)
        async with self._plan_lock:
            await self._replace_lost()
            await self._switch(plan, f"cores {format_cpu_list(planning.topology.cpu_ids())}")
            self._planning = planning
            self._policy = self._make_policy(self._policy_config)
            if self._policy is not None:
                self._policy.reset(planning.max_batch_size, time.monotonic())
                try:
                    await asyncio.to_thread(self._engine.reserve, planning.pool_size())
                except WorkerError as exc:  # the pool serves on; a larger plan starts its own
                    logger.warning("model %s: starting spare workers failed: %s", self._label, exc)
        return plan

    def _make_policy(self, config: PolicyConfig | None) -> PlanPolicy | None:
        if config is None or self._planning is None:
            return None
        planning = self._planning
        return config.create(planning.optimal, planning.max_batch_size)

    def _require_planning(self, what: str) -> Planning:
        if self._planning is None:
            raise BadRequest(f"model {self._label} cannot {what}: it was started without planning")
        return self._planning

    async def _switch(self, plan: Plan, reason: str, cause: Reason | None = None) -> Switch | None:
        """Run `plan` from the next batch on, because of `reason` (words for the log and the
        switch log; `cause`: the per-batch step's, None for a change asked from outside).
        Called with the plan lock held (between batches). Returns the switch made, None if
        the instances stay as they are.

        Raises WorkerError (logged) if the switch failed: the old plan keeps serving if its
        new workers failed to start, else the pool is broken (`Engine.reconfigure`)."""
        old = self._engine.plan
        if plan.layout == old.layout:
            self._engine.replan(plan)  # same instances: nothing to move
            return None
        at_unix_s = time.time()
        try:
            done = await asyncio.to_thread(self._engine.reconfigure, plan)
        except WorkerError as exc:
            logger.error("model %s: switching plans (%s) failed: %s", self._label, reason, exc)
            raise
        count = len(plan.instances)
        self._busy_s = (self._busy_s + [0.0] * count)[:count]
        switch = Switch(
            old.describe(), plan.describe(), reason, at_unix_s, done.took_s, done.retuned,
            done.spawned,
        )  # fmt: skip
        self._switches.append(switch)
        self._switches_total += 1
        # Per-batch switches come at every batch; others are rare and worth a line each.
        level = logging.DEBUG if cause is Reason.BATCH_SIZE else logging.INFO
        logger.log(
            level,
            "model %s: plan %s -> %s (%s) in %.1f ms (%d workers retuned, %d started)",
            self._label, switch.old_plan, switch.new_plan, reason, 1000.0 * done.took_s,
            done.retuned, done.spawned,
        )  # fmt: skip
        for listener in self._switch_listeners:
            try:
                listener(switch)
            except Exception:
                logger.exception("switch listener of model %s failed", self._label)
        return switch

    # --- the batch function ------------------------------------------------------------------

    async def _run_batch(self, requests: list[Any]) -> list[Any | BaseException]:
        async with self._plan_lock:
            await self._replace_lost()
            if self._policy is not None:
                try:
                    await self._follow(len(requests))
                except WorkerError as exc:
                    if self._engine.state is not EngineState.RUNNING:  # the pool broke
                        message = f"model {self._label} is unavailable: {exc}"
                        return [Unavailable(message) for _ in requests]
                    # The new plan's workers failed to start: the old plan runs this batch.
            return await self._run_split(requests)

    async def _follow(self, batch: int) -> None:
        """Apply the per-batch step (`packrat.controller.step`) to this batch."""
        assert self._policy is not None
        waiting = batch + self._batcher.queue_depth
        _, current_ms = self.split(batch)
        decided = step(
            self._policy, batch, waiting, time.monotonic(), self._engine.plan, current_ms,
            workers=len(self._engine.pool_pids), spawn_failed_s=self._spawn_failed_s,
        )  # fmt: skip
        if decided.action is Action.REPLAN:
            self._engine.replan(decided.plan)
        if decided.action is not Action.SWITCH:
            return
        try:
            switch = await self._switch(decided.plan, decided.proposal, decided.reason)
        except WorkerError:
            if self._engine.state is EngineState.RUNNING:  # its new workers failed to start
                self._spawn_failed_s = time.monotonic()
            raise
        if switch is not None:
            self._policy.switched(switch.took_s, time.monotonic())

    async def _run_split(self, requests: list[Any]) -> list[Any | BaseException]:
        sizes, _ = self.split(len(requests))
        started = time.perf_counter()
        try:
            parts = await asyncio.to_thread(self._engine.run_split, requests, sizes)
        except WorkerError as exc:
            logger.error("model %s: instance pool failed: %s", self._label, exc)
            return [Unavailable(f"model {self._label} is unavailable: {exc}") for _ in requests]
        compute_s = [0.0] * len(sizes)
        for part in parts:
            compute_s[part.instance] = part.compute_s
        wall_s = time.perf_counter() - started
        waits_s = self._batcher.running_waits_s
        self._record(BatchRecord(tuple(sizes), tuple(compute_s), wall_s, waits_s))
        if any(part.lost for part in parts):
            for part in parts:
                if part.lost:
                    logger.error("model %s: %s", self._label, part.error)
            self._replacing = asyncio.create_task(self._replace_lost_now())
        return _results(len(requests), parts, self._label)

    # --- lost instances ----------------------------------------------------------------------

    def add_restart_listener(self, listener: RestartListener) -> None:
        """Call `listener(count)` after lost instances were replaced (on the event loop)."""
        self._restart_listeners.append(listener)

    @property
    def restarts_total(self) -> int:
        """Instances replaced after being lost."""
        return self._restarts_total

    async def _replace_lost_now(self) -> None:
        """Replace lost instances as soon as the running batch is done, even if no other
        batch comes."""
        async with self._plan_lock:
            await self._replace_lost()

    async def _replace_lost(self) -> None:
        """Start fresh workers for the instances lost in a batch (plan lock held). On failure
        the pool is broken, and the next batch's requests get Unavailable."""
        if self._engine.state is not EngineState.DEGRADED:
            return
        started = time.monotonic()
        try:
            replaced = await asyncio.to_thread(self._engine.replace_lost)
        except WorkerError as exc:
            logger.error("model %s: replacing lost instances failed: %s", self._label, exc)
            return
        self._restarts_total += len(replaced)
        logger.warning(
            "model %s: lost instance(s) %s replaced in %.1f s",
            self._label, ", ".join(map(str, replaced)), time.monotonic() - started,
        )  # fmt: skip
        for listener in self._restart_listeners:
            try:
                listener(len(replaced))
            except Exception:
                logger.exception("restart listener of model %s failed", self._label)

    def _record(self, record: BatchRecord) -> None:
        for k, seconds in enumerate(record.compute_s):
            self._busy_s[k] += seconds
        self._last_batch_sizes = record.sizes
        self._batches_total += 1
        self._requests_total += record.size
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                logger.exception("batch listener of model %s failed", self._label)

    @property
    def _label(self) -> str:
        return f"{self._name}:{self._version}"


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


def _placed(planning: Planning, plan: Plan) -> Plan:
    try:
        return planning.place(plan)
    except PackratError as exc:
        raise BadRequest(f"cannot run plan {plan.describe()}: {exc}") from exc


def _every_optimal(planning: Planning) -> Plan:
    """Make every optimal plan up to the largest batch, so that the policy's later asks are
    lookups, and return the largest one's. Seconds on 128 cores with batches up to 1024: call
    it off the event loop. BadRequest if a batch size has no plan."""
    try:
        planning.pool_size()
        return planning.optimal(planning.max_batch_size)
    except PackratError as exc:
        raise BadRequest(f"cannot plan batches up to {planning.max_batch_size}: {exc}") from exc


def _unplaced(plan: Plan) -> Plan:
    """`plan` with its instances' cores cleared, to be placed elsewhere."""
    return dataclasses.replace(
        plan, instances=tuple(dataclasses.replace(i, cores=()) for i in plan.instances)
    )


def _declared_input_spec(source: ModelSource) -> InputSpec | None:
    """The input a source states without loading the model (zoo models, files given one)."""
    spec = getattr(source, "input_spec", None)
    return spec if isinstance(spec, InputSpec) else None


def _inferred_input_spec(example: Any) -> InputSpec | None:
    """Shape and dtype of an example request if it is a tensor (duck-typed: no torch import).

    Integer inputs get no upper bound (unknown from one example)."""
    shape, dtype = getattr(example, "shape", None), getattr(example, "dtype", None)
    if shape is None or dtype is None:
        return None
    try:
        return InputSpec(tuple(int(d) for d in shape), str(dtype).removeprefix("torch."))
    except (ModelError, TypeError, ValueError):
        return None


def _rss_bytes(pid: int) -> int | None:
    """Resident memory of process `pid` in bytes (Linux /proc), None if unreadable."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
