"""One served model version: a dynamic batcher in front of an instance pool.

Data path: `infer(request)` -> `Batcher.submit` -> one batch at a time (`_run_batch`, holding
the plan lock) -> lost instances replaced first (`packrat.server.replacement`) -> the model's
policy may switch plans for it (`PlanControl.follow`: workers re-pinned in place) -> the batch
split among the running instances and run on the pool (`BatchRunner`, on the event loop) ->
each request gets its own output or error (`packrat.server.batch_runner` says which); behind
the answers, the batch's record goes to the listeners (metrics, calibration).

Control path (`packrat.server.plan_control`): changes of plan from outside (`pin`, `release`,
`move`: the management API) take the same lock as a batch, so they happen between two
batches; queued requests wait and none fails.

The pool is any `InstancePool` (by default an `Engine` of pinned worker processes). If a lost
instance cannot be replaced, or a worker is lost while plans are switched, the pool is broken:
the model stops being `ready` and every request gets Unavailable (unregister and register the
model again to restart it). The same holds if the batcher's loop dies of a bug: every request
it held gets Unavailable. Either way the model's state is then `failed`. A switch whose new
workers fail to start changes nothing: it is logged, and the old plan keeps serving.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from packrat.controller.batching import BatchingConfig
from packrat.controller.calibration import CalibrationConfig, Correction
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.planning import Planning
from packrat.controller.policy import PolicyConfig, PolicyKind
from packrat.errors import WorkerError
from packrat.models.base import ModelIdentity, ModelSource
from packrat.models.inputs import InputSpec
from packrat.optimizer.table import LatencyTable
from packrat.pool import Engine, EngineConfig, EngineState
from packrat.pool.protocol import InstancePool
from packrat.server.batch_runner import BatchRunner
from packrat.server.batcher import Batcher
from packrat.server.calibrating import Calibrating
from packrat.server.describe import (
    declared_input_spec,
    describe_batching,
    describe_model,
    describe_plan,
    example_input_spec,
)
from packrat.server.errors import Unavailable
from packrat.server.plan_control import PlanControl
from packrat.server.records import (
    BatchListener,
    BatchRecord,
    RestartListener,
    Switch,
    SwitchListener,
)
from packrat.server.replacement import LostInstances
from packrat.types import Plan

__all__ = ["BatchRecord", "ModelRuntime", "RuntimeState", "Switch"]  # as before the split

logger = logging.getLogger(__name__)


class RuntimeState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"  # started, then unable to serve: its batch loop died or its pool broke
    STOPPING = "stopping"
    STOPPED = "stopped"


_UNAVAILABLE = {
    RuntimeState.RUNNING: "it is not taking requests",
    RuntimeState.STOPPING: "the server is shutting down",
    RuntimeState.STOPPED: "it has stopped",
}  # why a model in each state takes no request (FAILED: its `failure`)


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
        `engine_config`). calibration: when served batches correct `table`
        (`packrat.server.calibrating`; needs `table` and `planning`), None never.

    Metrics hooks: listeners (`add_listener`: a `BatchRecord` per batch; switches, restarts,
    corrections of the profile) and counters (`queue_depth`, `in_flight`, `busy_s`,
    `batches_total`, ...).
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
        calibration: CalibrationConfig | None = None,
    ) -> None:
        self._name, self._version, self._source, self._table = name, version, source, table
        self._loaded_at_startup = loaded_at_startup
        self._batch_timeout_s = (engine_config or EngineConfig()).batch_timeout_s
        self._backend = dict(backend) if backend is not None else None
        if pool is None:
            cores = None if planning is None else planning.topology.cpu_ids()
            pool = Engine(source, plan, engine_config, pool_size=pool_size, visible_cores=cores)
        self._pool = pool
        if estimator is None:
            estimator = policy.estimator if policy is not None else EstimatorConfig()
        self._lock = lock = asyncio.Lock()  # held by each batch and each change of plan
        self._lost = LostInstances(pool, self._label, lock)
        self._batches = BatchRunner(pool, table, self._label, self._lost)
        self._control = PlanControl(
            pool, self._label, lock, self._lost, planning=planning, policy=policy,
            estimator=estimator, on_switched=self._batches.plan_changed,
        )  # fmt: skip
        self._calibrating: Calibrating | None = None
        if calibration is not None and table is not None and planning is not None:
            self._calibrating = Calibrating(pool, table, calibration, self._label, self._replan)
            self._batches.listeners.add(self._calibrating.observe)
        batches = self._batches
        self._batcher: Batcher[Any, Any] = Batcher(
            self._run_batch, batching, after_batch=batches.publish, predict_s=batches.predicted_s
        )
        self._state = RuntimeState.NEW
        self._started_at_unix_s: float | None = None
        self._identity: ModelIdentity | None = None
        self._input_spec = declared_input_spec(source)

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
        """Started, not stopping, taking requests (also while `degraded`: requests wait)."""
        return (
            self._state is RuntimeState.RUNNING
            and self._pool.state in (EngineState.RUNNING, EngineState.DEGRADED)
            and self._batcher.accepting
        )

    @property
    def degraded(self) -> bool:
        """An instance was lost and is being replaced."""
        return self._pool.state is EngineState.DEGRADED

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
            state = self.state
            why = self.failure if state is RuntimeState.FAILED else _UNAVAILABLE.get(state)
            raise Unavailable(f"model {self._label} is unavailable ({why or 'not running'})")
        result: tuple[Any, float] = await self._batcher.submit(request)
        return result

    def describe(self) -> Mapping[str, Any]:
        """JSON-ready: name, version, state, model identity, input, plan, instances, batching."""
        return {
            "name": self._name,
            "version": self._version,
            "state": self.state.value,
            "failure": self.failure,
            "ready": self.ready,
            "degraded": self.degraded,
            "instances_restarted": self.restarts_total,
            "started_at_unix_s": self._started_at_unix_s,
            "loaded_at_startup": self._loaded_at_startup,
            **describe_model(self._source, self._identity, self._input_spec, self._backend),
            **describe_plan(self._pool.plan, self._pool.pids, self._pool.pool_pids),
            **describe_batching(self._batcher, self._batch_timeout_s, self._table is not None),
            **self._control.describe(),
            "calibration": None if self._calibrating is None else self._calibrating.describe(),
        }

    def switch_log(self) -> list[dict[str, Any]]:
        """JSON-ready: the last `SWITCH_LOG` changes of plan, oldest first."""
        return self._control.log.to_json()

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
            await asyncio.to_thread(self._pool.start)
            if self._input_spec is None and not self.takes_raw_requests:
                self._input_spec = await asyncio.to_thread(example_input_spec, self._pool)
            await self._batcher.start()
        except BaseException:
            await asyncio.to_thread(self._pool.close)
            self._state = RuntimeState.STOPPED
            raise
        self._state = RuntimeState.RUNNING
        self._started_at_unix_s = time.time()
        logger.info("model %s serving with plan %s", self._label, self._pool.plan.describe())

    async def stop(self, drain: bool = True) -> None:
        """Stop taking requests, finish queued and running ones (drain=True; else they get
        Unavailable), then stop every instance. Idempotent."""
        if self._state in (RuntimeState.STOPPING, RuntimeState.STOPPED):
            return
        self._state = RuntimeState.STOPPING
        try:
            await self._batcher.stop(drain=drain)
            await self._lost.finish()
            if self._calibrating is not None:
                await self._calibrating.stop()
        finally:
            await asyncio.to_thread(self._pool.close)
            self._state = RuntimeState.STOPPED

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
        if self._pool.state is EngineState.BROKEN:
            return "its instance pool is broken"
        return None

    # --- metrics hooks: listeners (run on the event loop; one that raises is logged) -------

    def add_listener(self, listener: BatchListener) -> None:
        """Call `listener(record)` with a `BatchRecord` after each batch."""
        self._batches.listeners.add(listener)

    def add_switch_listener(self, listener: SwitchListener) -> None:
        """Call `listener(switch)` after every change of plan."""
        self._control.log.listeners.add(listener)

    def add_restart_listener(self, listener: RestartListener) -> None:
        """Call `listener(count)` after lost instances were replaced."""
        self._lost.listeners.add(listener)

    def add_correction_listener(self, listener: Callable[[Correction], None]) -> None:
        """Call `listener(correction)` when served batches corrected a cell of the profile."""
        if self._calibrating is not None:
            self._calibrating.listeners.add(listener)

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
        return self._batches.counters.last_batch_sizes

    @property
    def busy_s(self) -> tuple[float, ...]:
        """Seconds each instance has computed (timed in the worker), in plan order."""
        return tuple(self._batches.counters.busy_s)

    @property
    def batches_total(self) -> int:
        return self._batches.counters.batches_total

    @property
    def requests_total(self) -> int:
        return self._batches.counters.requests_total

    @property
    def restarts_total(self) -> int:
        """Instances replaced after being lost."""
        return self._lost.restarts_total

    @property
    def switches(self) -> tuple[Switch, ...]:
        """The last `SWITCH_LOG` changes of plan, oldest first."""
        return self._control.log.switches

    @property
    def switches_total(self) -> int:
        return self._control.log.total

    @property
    def plan(self) -> Plan:
        return self._pool.plan

    def split(self, batch: int) -> tuple[list[int], float]:
        """Requests per instance for a batch of `batch`, and its predicted latency in ms
        (inf if the profile cannot predict it, nan without a profile). Memoized."""
        return self._batches.split(batch)

    @property
    def planning(self) -> Planning:
        """Where the model's plans come from; BadRequest if it was started without."""
        return self._control.planning

    @property
    def policy(self) -> str:
        """How the plan is chosen: "auto", "follow", "fixed" (`PolicyKind`) or "pinned"."""
        return self._control.policy_name

    async def pin(self, plan: Plan) -> Plan:
        """`PlanControl.pin`: run `plan` whatever the load; the plan placed."""
        return await self._control.pin(plan)

    async def release(self, kind: PolicyKind) -> Plan:
        """`PlanControl.release`: let `kind` choose the plan; the plan it starts from."""
        return await self._control.release(kind)

    async def move(self, planning: Planning) -> Plan:
        """`PlanControl.move`: run on `planning`'s cores; the new plan."""
        return await self._control.move(planning)

    # --- the batch function ----------------------------------------------------------------

    async def _replan(self, table: LatencyTable) -> None:
        """Plan and split batches on `table`, the profile corrected by served batches."""
        await self._control.recalibrate(table)
        self._batches.retable(table)

    async def _run_batch(self, requests: list[Any]) -> list[Any | BaseException]:
        async with self._lock:
            await self._lost.replace()
            count = len(requests)
            try:
                _, current_ms = self._batches.split(count)
                await self._control.follow(count, count + self._batcher.queue_depth, current_ms)
            except WorkerError as exc:
                if self._pool.state is not EngineState.RUNNING:  # the pool broke
                    message = f"model {self._label} is unavailable: {exc}"
                    return [Unavailable(message) for _ in requests]
                # The new plan's workers failed to start: the old plan runs this batch.
            return await self._batches.run(requests, self._batcher.running_waits_s)

    @property
    def _label(self) -> str:
        return f"{self._name}:{self._version}"
