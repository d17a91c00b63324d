"""Plans and their notation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packrat.types import InstanceSpec, Plan, parse_plan


def test_parse_paper_notation() -> None:
    plan = parse_plan("<1,6,8> + <2,4,4>", cores=14)
    assert plan.cores == 14 and plan.batch == 16 and plan.cores_used == 14
    assert [(i.threads, i.batch) for i in plan.instances] == [(6, 8), (4, 4), (4, 4)]
    assert plan.describe() == "<1,6,8> + <2,4,4>"


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(1, 8), st.integers(1, 64)), min_size=1, max_size=4
    )
)
def test_describe_round_trips(groups: list[tuple[int, int, int]]) -> None:
    instances = tuple(InstanceSpec(t, b) for n, t, b in groups for _ in range(n))
    plan = Plan(
        cores=sum(i.threads for i in instances),
        batch=sum(i.batch for i in instances),
        latency_ms=1.0,
        instances=instances,
    )
    again = parse_plan(plan.describe())
    assert sorted((i.threads, i.batch) for i in again.instances) == sorted(
        (i.threads, i.batch) for i in instances
    )


@pytest.mark.parametrize("text", ["", "2,1,8", "<2,1>", "<2,1,8> x", "<0,1,8>"])
def test_bad_notation(text: str) -> None:
    with pytest.raises(ValueError):
        parse_plan(text)


def test_plan_checks_budget_and_batch() -> None:
    with pytest.raises(ValueError, match="uses 4 cores but its budget is 2"):
        parse_plan("<2,2,4>", cores=2)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        InstanceSpec(0, 1)


def test_layout_is_threads_and_cores_per_instance_in_order() -> None:
    plan = Plan(4, 6, 1.0, (InstanceSpec(2, 4, (0, 1)), InstanceSpec(1, 2, (2,))))
    assert plan.layout == ((2, (0, 1)), (1, (2,)))
    resplit = Plan(4, 3, 1.0, (InstanceSpec(2, 2, (0, 1)), InstanceSpec(1, 1, (2,))))
    assert resplit.layout == plan.layout  # another split, same workers
