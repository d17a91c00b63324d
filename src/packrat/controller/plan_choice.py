"""How a model's first plan is chosen, in one vocabulary for the server and the simulator.

A `PlanChoice` is one of the plan policies ("auto", "follow", "fixed": the plan for the
largest batch, then as the policy says), the fat instance ("fat"), one single-thread instance
per core ("single", the simulator's baseline), or a plan given by hand ("<2,1,4>": pinned).
A served model's config holds one (`ModelConfig.choice`), which `packrat serve`'s --policy,
--fat and --plan and the TOML file's policy, fat and plan keys make
(`PlanChoice.from_options`); the simulator parses one string (`PlanChoice.parse`).
`first_plan` turns a choice into the plan the model starts on and the policy that may change
it, the same way for both.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from packrat.controller.estimator import EstimatorConfig
from packrat.controller.planning import Planning
from packrat.controller.policy import PolicyConfig, PolicyKind
from packrat.types import Layout, Plan, parse_plan


class ChoiceKind(enum.StrEnum):
    """What a choice names: a policy (AUTO, FOLLOW, FIXED, as `PolicyKind`), or a pinned
    plan (FAT, SINGLE, or PLAN: one given by hand)."""

    AUTO = "auto"  # each batch on the optimal plan for its size
    FOLLOW = "follow"  # the plan for the batch size the estimator sees (the paper's)
    FIXED = "fixed"  # the plan for the largest batch, always
    FAT = "fat"  # one instance, every core
    SINGLE = "single"  # <T,1,ceil(B/T)>: one single-thread instance per core
    PLAN = "plan"  # the plan given, e.g. <2,1,4>


_NAMED = tuple(kind for kind in ChoiceKind if kind is not ChoiceKind.PLAN)


@dataclass(frozen=True)
class PlanChoice:
    """A choice of first plan: `kind`, and for PLAN the `plan` (placed or not)."""

    kind: ChoiceKind
    plan: Plan | None = None

    def __post_init__(self) -> None:
        if (self.kind is ChoiceKind.PLAN) != (self.plan is not None):
            raise ValueError("PlanChoice.plan is given for kind PLAN, and only for it")

    @classmethod
    def parse(cls, text: str, cores: int | None = None) -> PlanChoice:
        """The choice `text` names: "auto", "follow", "fixed", "fat", "single" (any case),
        or a plan in the paper's notation (starting with "<"; `cores` is its core budget,
        default the cores it uses). ValueError naming the choices, or what does not parse."""
        text = text.strip()
        if text.startswith("<"):
            return cls(ChoiceKind.PLAN, parse_plan(text, cores))
        kind = next((kind for kind in _NAMED if kind.value == text.lower()), None)
        if kind is None:
            choices = ", ".join(kind.value for kind in _NAMED)
            raise ValueError(
                f"unknown policy {text!r}: choose one of {choices}, or a plan such as <2,1,4>"
            )
        return cls(kind)

    @classmethod
    def from_options(
        cls, plan: str | None = None, fat: bool = False, policy: str | None = None
    ) -> PlanChoice | None:
        """The choice `packrat serve`'s options make (--plan, --fat, --policy; a [[models]]
        entry's plan, fat and policy keys): the plan pinned, the fat instance, or the policy
        named (a pinned plan runs whatever the policy); None if none is given. ValueError for
        a plan or policy that does not parse, or both a plan and fat."""
        kind = None if policy is None else PolicyKind.parse(policy)
        if plan is not None and fat:
            raise ValueError("plan and fat=True exclude each other: pin one")
        if plan is not None:
            return cls(ChoiceKind.PLAN, parse_plan(plan))
        if fat:
            return cls(ChoiceKind.FAT)
        return None if kind is None else cls.following(kind)

    @classmethod
    def following(cls, kind: PolicyKind) -> PlanChoice:
        """The choice of the policy `kind`."""
        return cls(ChoiceKind(kind.value))

    @property
    def pinned(self) -> bool:
        """Whether the choice is a plan (PLAN, FAT, SINGLE) that no policy changes."""
        return self.policy_kind is None

    @property
    def policy_kind(self) -> PolicyKind | None:
        """The policy this choice names; None for a pinned plan."""
        try:
            return PolicyKind(self.kind.value)
        except ValueError:
            return None

    def describe(self) -> str:
        """The choice as `parse` reads it (a plan in the paper's notation)."""
        return self.plan.describe() if self.plan is not None else self.kind.value


@dataclass(frozen=True)
class FirstPlan:
    """The plan a model starts on (placed on its cores), the policy that may change it
    (None: pinned), and the workers to start (None: one per instance of `plan`; else enough
    for every plan the policy may choose to switch in place), with the layouts of those
    plans' instances (`Planning.layouts`: spares for workers that cannot move)."""

    plan: Plan
    policy: PolicyConfig | None
    pool_size: int | None = None
    spares: tuple[Layout, ...] = ()


def first_plan(
    planning: Planning,
    choice: PlanChoice,
    estimator: EstimatorConfig | None = None,
    *,
    size_pool: bool = False,
) -> FirstPlan:
    """The first plan of a model served with `choice` on `planning`'s cores: a pinned plan
    placed, the fat or single plan, or the optimal plan for the largest batch under the
    policy named (FOLLOW with `estimator`'s settings, default `EstimatorConfig()`).

    size_pool: also size the pool for a policy that changes plans (`Planning.pool_size`: it
    makes every optimal plan up to the largest batch, seconds on 128 cores; call this off an
    event loop). Raises PackratError (PlanError, TopologyError) for a plan that cannot be
    made or does not fit the cores.
    """
    if choice.plan is not None:
        return FirstPlan(planning.place(choice.plan), None)
    if choice.kind is ChoiceKind.FAT:
        return FirstPlan(planning.fat(), None)
    if choice.kind is ChoiceKind.SINGLE:
        cores = planning.cores
        per_instance = math.ceil(planning.max_batch_size / cores)
        return FirstPlan(planning.place(parse_plan(f"<{cores},1,{per_instance}>", cores)), None)
    kind = choice.policy_kind
    if kind is None:  # pragma: no cover - every kind is handled above
        raise ValueError(f"no first plan for choice {choice.kind.value}")
    plan = planning.optimal(planning.max_batch_size)
    policy = PolicyConfig(kind, estimator or EstimatorConfig())
    if not size_pool or kind is PolicyKind.FIXED:
        return FirstPlan(plan, policy)
    return FirstPlan(plan, policy, planning.pool_size(), planning.layouts())
