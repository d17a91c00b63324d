"""The control path of a served model: which plan its pool serves, and every change of it.

At each batch the model's policy may move it to another plan (`follow`, applying the pure
per-batch step of `packrat.controller.step`); from outside, the management API pins a plan
(`pin`), lets a policy choose again (`release`) or moves the model to other cores (`move`).
Each change happens between two batches (the plan lock is held), in place: workers are
re-pinned and re-threaded, and workers start only for a plan with more instances than the
pool has. A switch whose new workers fail to start changes nothing: it is logged, the old
plan keeps serving, and the policy's plans that need workers are passed over for
`SPAWN_RETRY_S`. A worker lost while plans are switched leaves the pool broken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from packrat.controller.estimator import EstimatorConfig
from packrat.controller.planning import Planning
from packrat.controller.policy import PlanPolicy, PolicyConfig, PolicyKind
from packrat.controller.step import Action, Reason, step
from packrat.errors import PackratError, WorkerError
from packrat.optimizer.table import LatencyTable
from packrat.pool import EngineState
from packrat.pool.protocol import InstancePool
from packrat.server.errors import BadRequest
from packrat.server.records import DESCRIBED_SWITCHES, Switch, SwitchLog
from packrat.server.replacement import LostInstances
from packrat.topology import format_cpu_list
from packrat.types import Plan

logger = logging.getLogger(__name__)


class PlanControl:
    """The plan of `pool`, changed under the model's plan `lock` (lost instances replaced
    first, by `lost`).

    planning: where other plans come from (None: the plan can never change); policy: how
    the plan follows the load (None: pinned); estimator: the estimator's settings when
    released to "follow". on_switched(plan): called after each switch to new instances.
    """

    def __init__(
        self,
        pool: InstancePool,
        label: str,
        lock: asyncio.Lock,
        lost: LostInstances,
        *,
        planning: Planning | None,
        policy: PolicyConfig | None,
        estimator: EstimatorConfig,
        on_switched: Callable[[Plan], None],
    ) -> None:
        self._pool = pool
        self._label = label
        self._lock = lock
        self._lost = lost
        self._planning = planning
        self._policy_config = policy
        self._estimator = estimator
        self._on_switched = on_switched
        self._policy = self._make_policy(policy)
        self._spawn_failed_s: float | None = None  # monotonic time of the last failed start
        self.log = SwitchLog(label)

    @property
    def policy(self) -> PlanPolicy | None:
        """The policy now choosing plans at each batch (None: the plan stays)."""
        return self._policy

    @property
    def policy_name(self) -> str:
        """How the plan is chosen: "auto", "follow", "fixed" (`PolicyKind`) or "pinned"."""
        return "pinned" if self._policy_config is None else self._policy_config.kind.value

    @property
    def planning(self) -> Planning:
        """Where the model's plans come from; BadRequest if it was started without."""
        return self._require_planning("change plans")

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the most workers where they cannot move (None where they can) and, if
        that changed the plans, how (`Planning.budget`); policy, estimator settings, switches
        (the total and the last few)."""
        recent = self.log.switches[-DESCRIBED_SWITCHES:]
        planning = self._planning
        budget = planning.budget() if planning is not None else None
        return {
            "max_workers": planning.max_layouts if planning is not None else None,
            "workers_kept": budget.to_json() if budget is not None else None,
            "policy": self.policy_name,
            "estimator": self._estimator.describe(),
            "switches_total": self.log.total,
            "recent_switches": [switch.to_json() for switch in recent],
        }

    async def pin(self, plan: Plan) -> Plan:
        """Run `plan` from the next batch on, and keep it whatever the load (placed on the
        model's cores if it has none). Returns the plan placed. Raises BadRequest if it does
        not fit the model's cores."""
        planning = self._require_planning("pin a plan")
        placed = _placed(planning, plan)
        async with self._lock:
            await self._lost.replace()
            await self.switch(placed, "pinned")
            self._policy_config, self._policy = None, None
        return placed

    async def release(self, kind: PolicyKind) -> Plan:
        """Let `kind` choose the plan from the next batch on, starting from the optimizer's
        plan for the largest batch. Returns that plan. Raises BadRequest without a profile."""
        planning = self._require_planning("choose plans")
        plan = await asyncio.to_thread(_every_optimal, planning)
        config = PolicyConfig(kind, self._estimator)
        async with self._lock:
            await self._lost.replace()
            await self.switch(plan, f"policy {kind.value}")
            self._policy_config = config
            self._reset_policy(planning)
        return plan

    async def move(self, planning: Planning) -> Plan:
        """Run on `planning`'s cores from the next batch on: the pinned plan placed anew, or
        the policy's plan for the largest batch. Workers a larger plan needs start now
        (seconds, while batches wait). Returns the new plan. Raises BadRequest if the
        pinned plan does not fit the new cores."""
        self._require_planning("change cores")
        if self._policy_config is None:
            plan = _placed(planning, _unplaced(self._pool.plan))
        else:
            plan = await asyncio.to_thread(_every_optimal, planning)
        async with self._lock:
            await self._lost.replace()
            await self.switch(plan, f"cores {format_cpu_list(planning.topology.cpu_ids())}")
            self._planning = planning
            self._reset_policy(planning)
            if self._policy is not None:
                await self._reserve(planning)
        return plan

    async def _reserve(self, planning: Planning) -> None:
        """The pool's workers for `planning`'s plans (the spares on its layouts, where workers
        cannot move); a failure is logged, and the pool serves on."""
        try:
            await asyncio.to_thread(self._pool.reserve, planning.pool_size(), planning.layouts())
        except WorkerError as exc:  # the pool serves on; a larger plan starts its own
            logger.warning("model %s: starting spare workers failed: %s", self._label, exc)

    async def recalibrate(self, table: LatencyTable) -> None:
        """Plan on `table` (the profile as served batches corrected it) from the next batch
        on: the plans are made off the event loop, then swapped in between two batches. The
        running plan stays until the policy moves off it. Where workers cannot move
        (`Planning.max_layouts`), the new plans keep the running layouts where others are no
        faster (`Planning.held`); where they use other layouts, the pool's spares follow them
        (`reserve`, as after a move) within the most workers. Nothing to do without
        planning."""
        while self._planning is not None:
            current = self._planning
            planning = dataclasses.replace(current, table=table, held=current.layouts())
            await asyncio.to_thread(_every_optimal, planning)
            async with self._lock:
                if self._planning is not current:  # moved meanwhile: plan its cores again
                    continue
                self._planning = planning
                if self._policy is None:
                    return
                self._policy.plan_with(planning.optimal)
                bound = planning.max_layouts is not None
                if bound and set(planning.layouts()) != set(current.layouts()):
                    await self._reserve(planning)
                return

    async def follow(self, batch: int, waiting: int, current_ms: float) -> None:
        """Apply the per-batch step to a batch of `batch` with `waiting` requests queued (this
        batch included), predicted to take `current_ms` on the running plan. Called with the
        plan lock held; raises WorkerError (logged) if a switch failed, as `switch`."""
        policy = self._policy
        if policy is None:
            return
        decided = step(
            policy, batch, waiting, time.monotonic(), self._pool.plan, current_ms,
            workers=len(self._pool.pool_pids), spawn_failed_s=self._spawn_failed_s,
        )  # fmt: skip
        if decided.action is Action.REPLAN:
            self._pool.replan(decided.plan)
        if decided.action is not Action.SWITCH:
            return
        try:
            switch = await self.switch(decided.plan, decided.proposal, decided.reason)
        except WorkerError:
            if self._pool.state is EngineState.RUNNING:  # its new workers failed to start
                self._spawn_failed_s = time.monotonic()
            raise
        if switch is not None:
            policy.switched(switch.took_s, time.monotonic())

    async def switch(self, plan: Plan, reason: str, cause: Reason | None = None) -> Switch | None:
        """Run `plan` from the next batch on, because of `reason` (words for the log and the
        switch log; `cause`: the per-batch step's, None for a change asked from outside).
        Called with the plan lock held (between batches). Returns the switch made, None if
        the instances stay as they are.

        Raises WorkerError (logged) if the switch failed: the old plan keeps serving if its
        new workers failed to start, else the pool is broken (`Engine.reconfigure`)."""
        old = self._pool.plan
        if plan.layout == old.layout:
            self._pool.replan(plan)  # same instances: nothing to move
            return None
        at_unix_s = time.time()
        try:
            done = await asyncio.to_thread(self._pool.reconfigure, plan)
        except WorkerError as exc:
            logger.error("model %s: switching plans (%s) failed: %s", self._label, reason, exc)
            raise
        self._on_switched(plan)
        switch = Switch(
            old.describe(), plan.describe(), reason, at_unix_s, done.took_s, done.retuned,
            done.spawned,
        )  # fmt: skip
        # Per-batch switches come at every batch; others are rare and worth a line each.
        level = logging.DEBUG if cause is Reason.BATCH_SIZE else logging.INFO
        logger.log(
            level,
            "model %s: plan %s -> %s (%s) in %.1f ms (%d workers retuned, %d started)",
            self._label, switch.old_plan, switch.new_plan, reason, 1000.0 * done.took_s,
            done.retuned, done.spawned,
        )  # fmt: skip
        self.log.add(switch)
        return switch

    def _make_policy(self, config: PolicyConfig | None) -> PlanPolicy | None:
        if config is None or self._planning is None:
            return None
        planning = self._planning
        return config.create(planning.optimal, planning.max_batch_size)

    def _reset_policy(self, planning: Planning) -> None:
        """A new policy from the policy settings, starting over from the largest batch."""
        self._policy = self._make_policy(self._policy_config)
        if self._policy is not None:
            self._policy.reset(planning.max_batch_size, time.monotonic())

    def _require_planning(self, what: str) -> Planning:
        if self._planning is None:
            raise BadRequest(f"model {self._label} cannot {what}: it was started without planning")
        return self._planning


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
