"""The simulated served model: its plan, its policy, and what each batch costs.

`SimModel.run_batch` is the server's batch function without processes: the server's own
per-batch step (`packrat.controller.step`) over the server's own `PlanPolicy` decides whether
this batch runs on another plan; the simulator pays the switch if the instances change (and
tells the policy, as the server does), then times the batch on the plan's instances
(`ServiceModel`). Plans come from the server's `Planning` (optimizer, allocation), the first
chosen as `packrat serve` chooses it (`choose_plan`, over `packrat.controller.plan_choice`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from packrat.controller.estimator import EstimatorConfig
from packrat.controller.plan_choice import ChoiceKind, PlanChoice, first_plan
from packrat.controller.planning import Planning
from packrat.controller.policy import PlanPolicy
from packrat.controller.step import Action, step
from packrat.errors import PackratError
from packrat.sim.service import ServiceModel, SimError
from packrat.types import Plan


@dataclass(frozen=True)
class ChosenPlan:
    """The plan a model starts on and the policy that may change it (None: pinned)."""

    name: str
    plan: Plan
    policy: PlanPolicy | None


def choose_plan(
    planning: Planning, choice: str, estimator: EstimatorConfig | None = None
) -> ChosenPlan:
    """The first plan and policy of a model served with `choice` (`PlanChoice.parse`: "auto",
    "follow", "fixed", "fat", "single", or a plan in the paper's notation such as "<2,1,4>"),
    as `packrat serve` would start it (`first_plan`; "follow" with `estimator`'s settings,
    default `EstimatorConfig()`). Raises SimError for a choice or plan that does not fit."""
    text = choice.strip()
    try:
        parsed = PlanChoice.parse(text, planning.cores)
    except ValueError as exc:
        if text.startswith("<"):
            raise SimError(f"cannot run plan {text} on {planning.cores} cores: {exc}") from None
        raise SimError(str(exc)) from None
    try:
        first = first_plan(planning, parsed, estimator)
    except PackratError as exc:
        if parsed.plan is not None:
            raise SimError(f"cannot run plan {text} on {planning.cores} cores: {exc}") from None
        raise SimError(f"cannot simulate policy {parsed.kind.value}: {exc}") from None
    config = first.policy
    policy = None if config is None else config.create(planning.optimal, planning.max_batch_size)
    name = text if parsed.kind is ChoiceKind.PLAN else parsed.kind.value
    return ChosenPlan(name, first.plan, policy)


@dataclass
class SimModel:
    """One model version as the simulator serves it: starts on `chosen`, its batches timed by
    `service`, a switch of plans costing `switch_s` seconds."""

    chosen: ChosenPlan
    service: ServiceModel
    switch_s: float
    plan: Plan = field(init=False)
    switch_times_s: list[float] = field(default_factory=list, init=False)
    _plan_s: dict[str, float] = field(default_factory=dict, init=False)
    _plan_since_s: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.plan = self.chosen.plan

    @property
    def policy(self) -> PlanPolicy | None:
        return self.chosen.policy

    @property
    def switches(self) -> int:
        return len(self.switch_times_s)

    def run_batch(self, batch: int, waiting: int, now_s: float) -> float:
        """Seconds a batch of `batch` dispatched at `now_s` (with `waiting` requests queued,
        this batch included) takes until its answers: a switch if the policy asks for one,
        then the batch on the plan's instances."""
        switch_s = 0.0
        policy = self.chosen.policy
        if policy is not None:
            _, current_ms = self.service.split(self.plan, batch)
            decided = step(policy, batch, waiting, now_s, self.plan, current_ms)
            if decided.action is Action.SWITCH:
                switch_s = self.switch_s
                self._move_to(decided.plan, now_s)
                policy.switched(switch_s, now_s + switch_s)
            elif decided.action is Action.REPLAN:  # the server's `Engine.replan`: nothing to pay
                self._move_to(decided.plan, now_s, switched=False)
        return switch_s + self.service.batch_s(self.plan, batch)

    def predicted_s(self, batch: int) -> float | None:
        """How long a batch of `batch` should take on the plan now running, by the profile
        (seconds, None where it cannot say), as the server's admission first estimates it."""
        _, latency_ms = self.service.split(self.plan, batch)
        return latency_ms / 1000.0 if math.isfinite(latency_ms) else None

    def time_per_plan(self, end_s: float) -> dict[str, float]:
        """Seconds spent on each plan (`Plan.describe()`) from 0 to `end_s`."""
        spent = dict(self._plan_s)
        label = self.plan.describe()
        spent[label] = spent.get(label, 0.0) + max(0.0, end_s - self._plan_since_s)
        return spent

    def _move_to(self, plan: Plan, now_s: float, switched: bool = True) -> None:
        label = self.plan.describe()
        self._plan_s[label] = self._plan_s.get(label, 0.0) + (now_s - self._plan_since_s)
        self._plan_since_s = now_s
        self.plan = plan
        if switched:
            self.switch_times_s.append(now_s)
