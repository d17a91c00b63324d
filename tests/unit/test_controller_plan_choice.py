"""One plan choice for the server and the simulator: parsed, and turned into a first plan."""

from __future__ import annotations

import pytest

from packrat.controller.estimator import EstimatorConfig
from packrat.controller.plan_choice import ChoiceKind, FirstPlan, PlanChoice, first_plan
from packrat.controller.planning import Planning
from packrat.controller.policy import PolicyConfig, PolicyKind
from packrat.errors import PackratError
from packrat.optimizer.table import LatencyTable
from packrat.topology import synthetic_topology
from packrat.types import parse_plan

CELLS = {
    (1, 1): 50.0, (1, 2): 70.0, (1, 4): 120.0, (1, 8): 230.0,
    (2, 1): 30.0, (2, 2): 45.0, (2, 4): 100.0, (2, 8): 200.0,
}  # fmt: skip


def planning(table: LatencyTable | None = None) -> Planning:
    topology = synthetic_topology(sockets=1, cores_per_socket=2)
    return Planning(topology, table or LatencyTable.from_cells(CELLS).interpolated(), 8)


def test_parse_reads_every_kind_and_plans() -> None:
    for kind in ("auto", "follow", "fixed", "fat", "single"):
        assert PlanChoice.parse(f" {kind.upper()} ") == PlanChoice(ChoiceKind(kind))
    pinned = PlanChoice.parse("<1,1,3> + <1,1,5>", cores=4)
    assert pinned.kind is ChoiceKind.PLAN and pinned.plan is not None
    assert pinned.plan.cores == 4 and pinned.describe() == "<1,1,5> + <1,1,3>"
    assert PlanChoice.parse("<2,1,4>").describe() == parse_plan("<2,1,4>").describe()


def test_serve_options_make_one_choice() -> None:
    plan = PlanChoice.from_options("<2,1,4>", policy="follow")  # a pin wins over a policy
    assert plan is not None and plan.kind is ChoiceKind.PLAN and plan.pinned
    assert plan.describe() == "<2,1,4>"
    assert PlanChoice.from_options(fat=True) == PlanChoice(ChoiceKind.FAT)
    assert PlanChoice.from_options(policy="fixed") == PlanChoice(ChoiceKind.FIXED)
    assert PlanChoice.from_options() is None
    assert not PlanChoice(ChoiceKind.AUTO).pinned and PlanChoice(ChoiceKind.SINGLE).pinned
    with pytest.raises(ValueError, match="plan and fat=True exclude each other"):
        PlanChoice.from_options("<2,1,4>", fat=True)
    with pytest.raises(ValueError, match="unknown plan policy 'often'"):
        PlanChoice.from_options("<2,1,4>", policy="often")
    with pytest.raises(ValueError, match="cannot read plan"):
        PlanChoice.from_options("2,1,4")


def test_parse_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="unknown policy 'plan': choose one of auto, follow"):
        PlanChoice.parse("plan")
    with pytest.raises(ValueError, match="cannot read plan"):
        PlanChoice.parse("<2,1>")
    with pytest.raises(ValueError, match="only for it"):
        PlanChoice(ChoiceKind.PLAN)


def test_policies_name_their_policy_kind() -> None:
    for kind in PolicyKind:
        choice = PlanChoice.following(kind)
        assert choice.policy_kind is kind and choice.describe() == kind.value
    assert PlanChoice(ChoiceKind.FAT).policy_kind is None


def test_a_policy_starts_on_the_optimal_plan_for_the_largest_batch() -> None:
    plans = planning()
    settings = EstimatorConfig(alpha=0.25)
    follow = first_plan(plans, PlanChoice(ChoiceKind.FOLLOW), settings)
    assert follow == FirstPlan(plans.optimal(8), PolicyConfig(PolicyKind.FOLLOW, settings))
    auto = first_plan(plans, PlanChoice(ChoiceKind.AUTO), size_pool=True)
    assert auto.policy == PolicyConfig(PolicyKind.AUTO) and auto.pool_size == plans.pool_size()
    assert auto.spares == plans.layouts()
    fixed = first_plan(plans, PlanChoice(ChoiceKind.FIXED), size_pool=True)
    assert fixed.policy == PolicyConfig(PolicyKind.FIXED) and fixed.pool_size is None
    assert fixed.spares == ()


def test_pinned_choices_have_no_policy() -> None:
    plans = planning()
    assert first_plan(plans, PlanChoice(ChoiceKind.FAT)) == FirstPlan(plans.fat(), None)
    single = first_plan(plans, PlanChoice(ChoiceKind.SINGLE), size_pool=True)
    assert single.plan.describe() == "<2,1,4>" and single.policy is None
    assert single.pool_size is None and all(i.cores for i in single.plan.instances)
    pinned = first_plan(plans, PlanChoice.parse("<1,2,8>"))
    assert pinned.plan.layout == plans.fat().layout and pinned.policy is None


def test_plans_that_cannot_be_made_raise_packrat_errors() -> None:
    with pytest.raises(PackratError, match="needs 3 cores"):
        first_plan(planning(), PlanChoice.parse("<3,1,4>"))
    no_profile = Planning(synthetic_topology(sockets=1, cores_per_socket=2), None, 8)
    with pytest.raises(PackratError, match="no latency profile"):
        first_plan(no_profile, PlanChoice(ChoiceKind.AUTO))
    assert first_plan(no_profile, PlanChoice(ChoiceKind.FAT)).plan.describe() == "<1,2,8>"
