"""The simulated served model: its plan, its policy, and what each batch costs.

`SimModel.run_batch` is the server's batch function without processes: the server's own
per-batch step (`packrat.controller.step`) over the server's own `PlanPolicy` decides whether
this batch runs on another plan; the simulator pays the switch if the instances change (and
tells the policy, as the server does), then times the batch on the plan's instances
(`ServiceModel`). Plans come from the server's
`Planning` (optimizer, allocation), chosen as `packrat serve` chooses them (`choose_plan`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from packrat.controller.estimator import EstimatorConfig
from packrat.controller.planning import Planning
from packrat.controller.policy import PlanPolicy, PolicyConfig, PolicyKind
from packrat.controller.step import Action, step
from packrat.errors import PackratError
from packrat.sim.service import ServiceModel, SimError
from packrat.types import Plan, parse_plan


class Choice(enum.StrEnum):
    """What `--policy` names besides a plan: the server's policies, or a pinned plan."""

    AUTO = "auto"  # packrat serve --policy auto (each batch on the plan for its size)
    FOLLOW = "follow"  # --policy follow (the paper's estimator)
    FIXED = "fixed"  # --policy fixed (the plan for --max-batch-size)
    FAT = "fat"  # --fat (one instance, every core)
    SINGLE = "single"  # --plan '<T,1,ceil(B/T)>' (one single-thread instance per core)


@dataclass(frozen=True)
class ChosenPlan:
    """The plan a model starts on and the policy that may change it (None: pinned)."""

    name: str
    plan: Plan
    policy: PlanPolicy | None


def choose_plan(
    planning: Planning, choice: str, estimator: EstimatorConfig | None = None
) -> ChosenPlan:
    """The first plan and policy of a model served with `choice`: "auto", "follow", "fixed",
    "fat", "single", or a plan in the paper's notation (e.g. "<2,1,4>"), as `packrat serve`
    would start it ("follow" with `estimator`'s settings, default `EstimatorConfig()`).
    Raises SimError for a choice or plan that does not fit."""
    text = choice.strip()
    if text.startswith("<"):
        try:
            return ChosenPlan(text, planning.place(parse_plan(text, planning.cores)), None)
        except (ValueError, PackratError) as exc:
            raise SimError(f"cannot run plan {text} on {planning.cores} cores: {exc}") from None
    try:
        kind = Choice(text.lower())
    except ValueError:
        choices = ", ".join(c.value for c in Choice)
        raise SimError(
            f"unknown policy {choice!r}: choose one of {choices}, or a plan such as <2,1,4>"
        ) from None
    try:
        if kind is Choice.FAT:
            return ChosenPlan(kind.value, planning.fat(), None)
        if kind is Choice.SINGLE:
            cores = planning.cores
            per_instance = math.ceil(planning.max_batch_size / cores)
            single = parse_plan(f"<{cores},1,{per_instance}>", cores)
            return ChosenPlan(kind.value, planning.place(single), None)
        plan = planning.optimal(planning.max_batch_size)
        policy = PolicyConfig(PolicyKind(kind.value), estimator or EstimatorConfig()).create(
            planning.optimal, planning.max_batch_size
        )
        return ChosenPlan(kind.value, plan, policy)
    except PackratError as exc:
        raise SimError(f"cannot simulate policy {kind.value}: {exc}") from None


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
