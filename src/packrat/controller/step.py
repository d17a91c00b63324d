"""The per-batch step: which plan one batch runs on, as a pure decision.

At every batch the server's runtime (`packrat.server.plan_control`) and the simulator
(`packrat.sim.model`) call `step` with the model's policy and what they see, and apply the
answer, so the two cannot drift:

- KEEP: the batch runs on the plan now running (no proposal, or a plan that needs workers
  the pool lacks while a recent start of workers failed);
- REPLAN: the policy proposed a plan with the same instances (same threads on the same cores),
  so only the plan record changes (`Engine.replan`): nothing moves, nothing is paid;
- SWITCH: the proposed plan has other instances: the workers are re-pinned and re-threaded
  (`Engine.reconfigure`), which costs about a millisecond, and the caller tells the policy
  what it cost (`PlanPolicy.switched`).

No clock, no I/O: the caller passes the time and the pool's size. The policy is asked once
(`PlanPolicy.propose`), which updates its own state (the estimator's average), as it would be
by the caller asking it directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from packrat.controller.policy import PlanPolicy, PolicyKind
from packrat.types import Plan

SPAWN_RETRY_S = 60.0
"""After a switch whose new workers failed to start, how long the policy's plans that would
start workers again are passed over (the running plan serves): a failed start takes up to the
engine's start timeout, and every batch must not wait for another one."""


class Action(enum.Enum):
    """What the caller does before running the batch."""

    KEEP = "keep"  # run on the current plan
    REPLAN = "replan"  # same instances: record the new plan, move nothing
    SWITCH = "switch"  # re-pin and re-thread the workers to the new plan's instances


class Reason(enum.Enum):
    """Why the step decided as it did."""

    NO_PROPOSAL = "no proposal"  # the policy keeps the running plan
    SAME_INSTANCES = "same instances"  # the proposal differs only in how batches split
    SPAWN_BACKOFF = "spawn backoff"  # it needs workers, and starting some failed recently
    BATCH_SIZE = "batch size"  # `PerBatch`: the plan for this batch's own size
    ESTIMATED_LOAD = "estimated load"  # `FollowLoad`: the plan for the estimated batch size


_SWITCH_REASONS = {PolicyKind.AUTO: Reason.BATCH_SIZE, PolicyKind.FOLLOW: Reason.ESTIMATED_LOAD}


@dataclass(frozen=True)
class Step:
    """The decision for one batch: `action`, `reason`, the plan the batch runs on (the
    current one for KEEP), and the policy's own words for its proposal ("batch of 4",
    "estimated batch size 8"; "" without one), for logs and the switch log."""

    action: Action
    reason: Reason
    plan: Plan
    proposal: str = ""


def step(
    policy: PlanPolicy,
    batch: int,
    waiting: int,
    now_s: float,
    current_plan: Plan,
    current_ms: float,
    *,
    workers: int | None = None,
    spawn_failed_s: float | None = None,
    retry_s: float = SPAWN_RETRY_S,
) -> Step:
    """The step for a batch of `batch` requests dispatched at `now_s` (seconds, any
    monotonic clock) with `waiting` requests queued (this batch included), on `current_plan`
    where it is predicted to take `current_ms` (nan if unknown).

    workers: the workers the pool has (None: as many as any plan needs, as in the simulator);
    spawn_failed_s: when a switch's new workers last failed to start (None: never). A plan
    with more instances than `workers` is passed over until `retry_s` after that failure.
    """
    proposal = policy.propose(batch, waiting, now_s, current_plan, current_ms)
    if proposal is None:
        return Step(Action.KEEP, Reason.NO_PROPOSAL, current_plan)
    plan, words = proposal.plan, proposal.reason
    if plan.layout == current_plan.layout:
        return Step(Action.REPLAN, Reason.SAME_INSTANCES, plan, words)
    needs_workers = workers is not None and len(plan.instances) > workers
    if needs_workers and spawn_failed_s is not None and now_s - spawn_failed_s < retry_s:
        return Step(Action.KEEP, Reason.SPAWN_BACKOFF, current_plan, words)
    reason = _SWITCH_REASONS.get(policy.kind)
    if reason is None:
        raise ValueError(f"a {policy.kind.value} policy proposed a plan: it never should")
    return Step(Action.SWITCH, reason, plan, words)
