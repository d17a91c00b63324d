"""The configurations `packrat bench` measures beside Packrat's plan."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from packrat.bench.candidates import candidates, even_split, homogeneous, role_labels
from packrat.types import InstanceSpec, Plan


@given(st.integers(1, 200), st.integers(1, 64))
def test_even_split(total: int, parts: int) -> None:
    sizes = even_split(total, parts)
    assert len(sizes) == parts and sum(sizes) == total
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)


def _shape(plan: Plan) -> list[tuple[int, int]]:
    return sorted(((i.threads, i.batch) for i in plan.instances), reverse=True)


def test_two_cores_batch_eight() -> None:
    packrat = Plan(2, 8, 1.0, (InstanceSpec(1, 4), InstanceSpec(1, 4)))
    found = candidates(2, 8, packrat)
    assert [c.label for c in found] == ["packrat", "fat", "homogeneous"]
    assert _shape(found[1].plan) == [(2, 8)]
    assert _shape(found[2].plan) == [(1, 8)]
    # Packrat's plan is also the single-thread configuration: reported under both roles.
    assert role_labels(2, 8, packrat) == ["single"]


@given(st.integers(1, 12), st.integers(1, 40))
def test_every_homogeneous_plan_once(cores: int, batch: int) -> None:
    packrat = homogeneous(cores, batch, 1, cores)
    found = candidates(cores, batch, packrat)
    shapes = [tuple(_shape(c.plan)) for c in found]
    assert len(shapes) == len(set(shapes)), "each configuration is measured once"
    expected = {
        tuple(_shape(homogeneous(cores, batch, n, t)))
        for n in range(1, min(cores, batch) + 1)
        for t in range(1, cores // n + 1)
    }
    assert set(shapes) == expected
    for c in found:
        assert c.plan.cores_used <= cores and c.plan.batch == batch
    single = [c for c in found if c.label == "single"]
    assert cores == 1 or batch == 1 or len(single) == 1
