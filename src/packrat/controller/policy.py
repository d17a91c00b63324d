"""When to change plans: the policies a served model can follow, as pure decisions.

At each batch the server asks its policy whether the batch should run on another plan. The
policy answers with a `Proposal` (the plan and why) or None (keep the running plan, splitting
the batch over its instances). A switch is done in place between batches and takes about a
millisecond (`packrat.pool.engine.Engine.reconfigure`), which is what makes `PerBatch` viable.

- `PerBatch` ("auto", the default): every batch runs the optimizer's plan for its own size,
  unless the profile predicts that the switch would cost more than it saves.
- `FollowLoad` ("follow"): the paper's design (section 3.8), for switches that are expensive:
  the batch-size estimator smooths the queue depth, and the plan changes only when its
  estimate does, after a cool-down.
- No policy ("fixed", or a pinned plan): the plan never changes by itself.

No clock, no I/O, no torch: the caller passes the time and the predictions, so the simulator
and the server run the same code.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from packrat.choices import parse_choice
from packrat.controller.estimator import BatchSizeEstimator, EstimatorConfig
from packrat.types import Plan

Planner = Callable[[int], Plan]
"""The plan to run for a batch size (the optimizer's, placed on the model's cores)."""


class PolicyKind(enum.StrEnum):
    """How a served model picks its plan. AUTO: per batch; FOLLOW: the smoothed estimator;
    FIXED: the plan for the largest batch, always."""

    AUTO = "auto"
    FOLLOW = "follow"
    FIXED = "fixed"

    @classmethod
    def parse(cls, text: str) -> PolicyKind:
        """The kind named `text`; ValueError listing the choices."""
        return parse_choice(cls, text, "plan policy")


@dataclass(frozen=True)
class Proposal:
    """Run `plan` from this batch on, because of `reason` (for logs and metrics)."""

    plan: Plan
    reason: str


class PlanPolicy(Protocol):
    """Decides, at each batch, whether to change plans."""

    @property
    def kind(self) -> PolicyKind: ...

    def propose(
        self, batch: int, waiting: int, now_s: float, current: Plan, current_ms: float
    ) -> Proposal | None:
        """A plan for this batch of `batch` requests, dispatched at `now_s` with `waiting`
        requests in the queue (this batch included), or None to keep `current`, on which the
        batch is predicted to take `current_ms` (nan if unknown)."""

    def switched(self, took_s: float, now_s: float) -> None:
        """A switch this policy proposed was made, in `took_s` seconds."""

    def reset(self, batch: int, now_s: float) -> None:
        """The plan for `batch` was set from outside (released, cores changed)."""

    def plan_with(self, planner: Planner) -> None:
        """Choose among `planner`'s plans from now on (the profile it plans on was corrected);
        the rest of the policy's state stays."""


SWITCH_COST_ALPHA = 0.25
"""Weight of the newest measured switch in `PerBatch`'s running estimate of a switch's cost."""

SWITCH_MARGIN = 0.10
"""Share of the new plan's latency a switch must also save: the first batch on re-threaded
workers runs slower than the profile says (ResNet-50 at batch 2 on 2 cores: 63 ms after a
switch to the fat plan, 55 ms steady; `benchmarks/switch_cost.py`)."""


@dataclass
class PerBatch:
    """Each batch on the optimizer's plan for its own size, when that pays.

    A batch of b switches to `planner(b)` unless the running plan already has the same
    instances, or the profile says the batch would not finish sooner on the new plan once
    the switch is paid: the switch cost (a moving average of the switches measured, starting
    at `switch_cost_s`) plus `margin` times the new plan's latency, for the slower first batch
    after it. A switch must save more than that.
    """

    planner: Planner
    switch_cost_s: float = 0.001
    margin: float = SWITCH_MARGIN

    @property
    def kind(self) -> PolicyKind:
        return PolicyKind.AUTO

    def propose(
        self, batch: int, waiting: int, now_s: float, current: Plan, current_ms: float
    ) -> Proposal | None:
        target = self.planner(batch)
        if target.layout == current.layout:
            return None
        gain_ms = current_ms - target.latency_ms
        cost_ms = 1000.0 * self.switch_cost_s + self.margin * target.latency_ms
        if math.isnan(current_ms) or gain_ms > cost_ms:
            return Proposal(target, f"batch of {batch}")
        return None

    def switched(self, took_s: float, now_s: float) -> None:
        self.switch_cost_s += SWITCH_COST_ALPHA * (took_s - self.switch_cost_s)

    def reset(self, batch: int, now_s: float) -> None:
        return None

    def plan_with(self, planner: Planner) -> None:
        self.planner = planner


@dataclass
class FollowLoad:
    """The plan for the batch size the estimator sees in the load (the paper's policy)."""

    planner: Planner
    estimator: BatchSizeEstimator

    @classmethod
    def create(cls, planner: Planner, max_batch_size: int, config: EstimatorConfig) -> FollowLoad:
        """Starting from the plan for `max_batch_size`."""
        return cls(planner, BatchSizeEstimator(max_batch_size, max_batch_size, config))

    @property
    def kind(self) -> PolicyKind:
        return PolicyKind.FOLLOW

    def propose(
        self, batch: int, waiting: int, now_s: float, current: Plan, current_ms: float
    ) -> Proposal | None:
        target = self.estimator.observe(waiting, now_s)
        if target is None:
            return None
        return Proposal(self.planner(target), f"estimated batch size {target}")

    def switched(self, took_s: float, now_s: float) -> None:
        return None

    def reset(self, batch: int, now_s: float) -> None:
        self.estimator.reset(min(max(batch, 1), self.estimator.max_batch_size), now_s)

    def plan_with(self, planner: Planner) -> None:
        self.planner = planner


@dataclass(frozen=True)
class PolicyConfig:
    """A served model's policy: its kind and, for FOLLOW, the estimator's settings."""

    kind: PolicyKind = PolicyKind.AUTO
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)

    def create(self, planner: Planner, max_batch_size: int) -> PlanPolicy | None:
        """The policy over `planner` (None for FIXED: the plan never changes)."""
        if self.kind is PolicyKind.AUTO:
            return PerBatch(planner)
        if self.kind is PolicyKind.FOLLOW:
            return FollowLoad.create(planner, max_batch_size, self.estimator)
        return None
