"""Plan policies: per batch with the switch cost weighed, the paper's estimator, or none."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packrat.controller.estimator import EstimatorConfig
from packrat.controller.policy import (
    FollowLoad,
    PerBatch,
    PolicyConfig,
    PolicyKind,
)
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
THIN = {b: placed((1, b // 2), (1, b - b // 2), latency_ms=12.0 * b / 2) for b in (2, 4)}


def planner(batch: int) -> Plan:
    """Fat for one request, two thin instances from two requests on."""
    return FAT[1] if batch == 1 else THIN[batch]


def test_per_batch_moves_to_the_plan_for_each_batch() -> None:
    policy = PerBatch(planner)
    proposal = policy.propose(1, 1, 0.0, THIN[4], current_ms=20.0)
    assert proposal is not None and proposal.plan == FAT[1]
    assert proposal.reason == "batch of 1"
    proposal = policy.propose(4, 9, 0.0, FAT[1], current_ms=40.0)
    assert proposal is not None and proposal.plan == THIN[4]


def test_per_batch_keeps_a_plan_with_the_same_instances() -> None:
    # THIN[2] and THIN[4] run the same two workers: only the split differs.
    assert PerBatch(planner).propose(2, 2, 0.0, THIN[4], current_ms=100.0) is None


def test_per_batch_switches_only_when_the_gain_beats_the_switch_cost() -> None:
    policy = PerBatch(planner, switch_cost_s=0.005, margin=0.0)
    # On THIN[4] a batch of 1 takes 14 ms; the fat plan takes 10: 4 ms saved < 5 ms to switch.
    assert policy.propose(1, 1, 0.0, THIN[4], current_ms=14.0) is None
    assert policy.propose(1, 1, 0.0, THIN[4], current_ms=15.5) is not None
    # The margin: the first batch after a switch is slower; 10% of 10 ms more to save.
    margined = PerBatch(planner, switch_cost_s=0.005, margin=0.1)
    assert margined.propose(1, 1, 0.0, THIN[4], current_ms=15.5) is None
    assert margined.propose(1, 1, 0.0, THIN[4], current_ms=16.5) is not None
    # Without a prediction for the running plan, the optimizer's plan wins.
    assert policy.propose(1, 1, 0.0, THIN[4], current_ms=math.nan) is not None


def test_per_batch_learns_what_a_switch_costs() -> None:
    policy = PerBatch(planner, switch_cost_s=0.001, margin=0.0)
    for _ in range(40):
        policy.switched(0.008, 0.0)
    assert policy.switch_cost_s == pytest.approx(0.008, rel=1e-3)
    assert policy.propose(1, 1, 0.0, THIN[4], current_ms=17.0) is None  # 7 ms < 8 ms
    policy.reset(4, 1.0)  # outside changes do not make switches cheaper
    assert policy.switch_cost_s == pytest.approx(0.008, rel=1e-3)


@given(st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=30))
def test_per_batch_never_proposes_the_running_layout(batches: list[int]) -> None:
    policy, current = PerBatch(planner, switch_cost_s=0.0), FAT[1]
    for batch in batches:
        proposal = policy.propose(batch, batch, 0.0, current, current_ms=math.nan)
        if proposal is not None:
            assert proposal.plan.layout != current.layout
            assert proposal.plan == planner(batch)
            current = proposal.plan
        assert current.layout == planner(batch).layout


def test_follow_load_switches_when_the_estimate_changes_after_the_cool_down() -> None:
    config = EstimatorConfig(alpha=1.0, window=1, cooldown_s=5.0)
    policy = FollowLoad.create(planner, 4, config)
    assert policy.kind is PolicyKind.FOLLOW
    assert policy.propose(1, 4, 0.0, THIN[4], math.nan) is None  # the target already
    proposal = policy.propose(1, 1, 1.0, THIN[4], math.nan)
    assert proposal is not None and proposal.plan == FAT[1]
    assert proposal.reason == "estimated batch size 1"
    assert policy.propose(4, 4, 2.0, FAT[1], math.nan) is None  # cooling down
    proposal = policy.propose(4, 4, 6.5, FAT[1], math.nan)
    assert proposal is not None and proposal.plan == THIN[4]


def test_follow_load_reset_restarts_the_estimate_and_the_cool_down() -> None:
    policy = FollowLoad.create(planner, 4, EstimatorConfig(alpha=1.0, window=1, cooldown_s=5.0))
    policy.reset(4, 10.0)
    assert policy.estimator.target == 4 and policy.estimator.average is None
    assert policy.propose(1, 1, 12.0, THIN[4], math.nan) is None  # cool-down from the reset
    assert policy.propose(1, 1, 15.0, THIN[4], math.nan) is not None


def test_policy_config_makes_each_kind() -> None:
    assert isinstance(PolicyConfig().create(planner, 4), PerBatch)
    follow = PolicyConfig(PolicyKind.FOLLOW, EstimatorConfig(window=3)).create(planner, 4)
    assert isinstance(follow, FollowLoad) and follow.estimator.config.window == 3
    assert follow.estimator.target == 4
    assert PolicyConfig(PolicyKind.FIXED).create(planner, 4) is None


def test_policy_kind_parse_names_the_choices() -> None:
    assert PolicyKind.parse("follow") is PolicyKind.FOLLOW
    with pytest.raises(ValueError, match="auto, follow, fixed"):
        PolicyKind.parse("sometimes")
