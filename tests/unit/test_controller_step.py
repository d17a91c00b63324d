"""The per-batch step: keep, replan or switch, and why, for each policy."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from packrat.controller.estimator import EstimatorConfig
from packrat.controller.policy import FollowLoad, PerBatch, PolicyKind, Proposal
from packrat.controller.step import SPAWN_RETRY_S, Action, Reason, Step, step
from packrat.types import InstanceSpec, Plan


def placed(*instances: tuple[int, int], latency_ms: float) -> Plan:
    """A plan of (threads, batch) instances placed on consecutive cores."""
    specs, core = [], 0
    for threads, batch in instances:
        specs.append(InstanceSpec(threads, batch, tuple(range(core, core + threads))))
        core += threads
    return Plan(
        cores=core, batch=sum(b for _, b in instances), latency_ms=latency_ms,
        instances=tuple(specs),
    )  # fmt: skip


FAT = {b: placed((2, b), latency_ms=10.0 * b) for b in (1, 2, 4)}
THIN = {b: placed((1, b // 2), (1, b - b // 2), latency_ms=6.0 * b) for b in (2, 4)}


def planner(batch: int) -> Plan:
    """Fat for one request, two thin instances from two requests on."""
    return FAT[1] if batch == 1 else THIN[batch]


@dataclass
class Proposing:
    """A policy of `kind` that proposes `plan` at every batch, counting the asks."""

    plan: Plan | None
    kind: PolicyKind = PolicyKind.AUTO
    asked: int = 0

    def propose(
        self, batch: int, waiting: int, now_s: float, current: Plan, current_ms: float
    ) -> Proposal | None:
        self.asked += 1
        return None if self.plan is None else Proposal(self.plan, f"batch of {batch}")

    def switched(self, took_s: float, now_s: float) -> None:
        return None

    def reset(self, batch: int, now_s: float) -> None:
        return None

    def plan_with(self, planner: Callable[[int], Plan]) -> None:
        return None


def test_no_proposal_keeps_the_running_plan() -> None:
    decided = step(Proposing(None), 4, 4, 0.0, THIN[4], 24.0)
    assert decided == Step(Action.KEEP, Reason.NO_PROPOSAL, THIN[4])


def test_per_batch_switches_to_the_plan_for_the_batch_size() -> None:
    decided = step(PerBatch(planner), 1, 1, 0.0, THIN[4], 50.0)
    assert decided == Step(Action.SWITCH, Reason.BATCH_SIZE, FAT[1], "batch of 1")


def test_per_batch_keeps_when_the_switch_does_not_pay() -> None:
    decided = step(PerBatch(planner, switch_cost_s=0.05), 1, 1, 0.0, THIN[4], 12.0)
    assert (decided.action, decided.reason, decided.plan) == (
        Action.KEEP, Reason.NO_PROPOSAL, THIN[4],
    )  # fmt: skip


def test_a_proposal_with_the_same_instances_only_replans() -> None:
    # THIN[2] and THIN[4] run the same two workers: only the plan record changes.
    decided = step(Proposing(THIN[2]), 2, 2, 0.0, THIN[4], 24.0, workers=2)
    assert decided == Step(Action.REPLAN, Reason.SAME_INSTANCES, THIN[2], "batch of 2")


def test_follow_load_switches_on_the_estimated_batch_size() -> None:
    policy = FollowLoad.create(planner, 4, EstimatorConfig.per_batch())
    decided = step(policy, 1, 1, 10.0, THIN[4], math.nan)
    assert decided == Step(Action.SWITCH, Reason.ESTIMATED_LOAD, FAT[1], "estimated batch size 1")
    assert step(policy, 1, 1, 10.1, FAT[1], 10.0).action is Action.KEEP


def test_a_plan_needing_more_workers_waits_after_a_failed_start() -> None:
    policy = Proposing(THIN[4])
    failed = dict(workers=1, spawn_failed_s=100.0)
    during = step(policy, 4, 4, 100.0 + SPAWN_RETRY_S / 2, FAT[1], 40.0, **failed)
    assert during == Step(Action.KEEP, Reason.SPAWN_BACKOFF, FAT[1], "batch of 4")
    after = step(policy, 4, 4, 100.0 + SPAWN_RETRY_S, FAT[1], 40.0, **failed)
    assert (after.action, after.plan) == (Action.SWITCH, THIN[4])
    assert policy.asked == 2  # the policy is asked at every batch, backing off or not


def test_the_backoff_holds_only_plans_that_need_workers_the_pool_lacks() -> None:
    policy = Proposing(THIN[4])
    enough = step(policy, 4, 4, 1.0, FAT[1], 40.0, workers=2, spawn_failed_s=0.0)
    assert enough.action is Action.SWITCH
    unlimited = step(policy, 4, 4, 1.0, FAT[1], 40.0, spawn_failed_s=0.0)
    assert unlimited.action is Action.SWITCH  # workers None: the simulator's pool
    never_failed = step(policy, 4, 4, 1.0, FAT[1], 40.0, workers=1)
    assert never_failed.action is Action.SWITCH


def test_a_retry_window_can_be_given() -> None:
    decided = step(Proposing(THIN[4]), 4, 4, 5.0, FAT[1], 40.0, workers=1, spawn_failed_s=0.0,
                   retry_s=10.0)  # fmt: skip
    assert decided.reason is Reason.SPAWN_BACKOFF


def test_a_fixed_policy_that_proposes_is_a_bug() -> None:
    with pytest.raises(ValueError, match="fixed policy proposed a plan"):
        step(Proposing(THIN[4], PolicyKind.FIXED), 4, 4, 0.0, FAT[1], 40.0)
