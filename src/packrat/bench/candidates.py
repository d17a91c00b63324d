"""The configurations `packrat bench` measures beside Packrat's plan. Pure, no torch."""

from __future__ import annotations

from dataclasses import dataclass

from packrat.types import InstanceSpec, Plan


@dataclass(frozen=True)
class Candidate:
    """A configuration to measure: a label for reports and the plan (cores not yet placed)."""

    label: str
    plan: Plan

    @property
    def layout(self) -> tuple[int, ...]:
        """Threads per instance, largest first: plans with one layout share worker processes."""
        return tuple(i.threads for i in self.plan.instances)


def even_split(total: int, parts: int) -> list[int]:
    """`total` split into `parts` sizes differing by at most one, largest first."""
    base, extra = divmod(total, parts)
    return [base + 1] * extra + [base] * (parts - extra)


def homogeneous(cores: int, batch: int, instances: int, threads: int) -> Plan:
    """<instances, threads, ~batch/instances>: identical thread counts, near-even batch split."""
    specs = tuple(InstanceSpec(threads, b) for b in even_split(batch, instances))
    return Plan(cores=cores, batch=batch, latency_ms=0.0, instances=specs)


def _shape(plan: Plan) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(((i.threads, i.batch) for i in plan.instances), reverse=True))


def candidates(cores: int, batch: int, packrat: Plan) -> list[Candidate]:
    """Packrat's plan, the fat instance, T single-thread instances, and every other feasible
    homogeneous plan <i, t, B/i> with i * t <= T and i <= B; each shape once, labelled by the
    first role it plays (packrat, fat, single, homogeneous)."""
    found: list[Candidate] = [Candidate("packrat", packrat)]
    seen = {_shape(packrat)}

    def add(label: str, plan: Plan) -> None:
        if _shape(plan) not in seen:
            seen.add(_shape(plan))
            found.append(Candidate(label, plan))

    add("fat", homogeneous(cores, batch, 1, cores))
    add("single", homogeneous(cores, batch, min(cores, batch), 1))
    for n in range(1, min(cores, batch) + 1):
        for t in range(1, cores // n + 1):
            add("homogeneous", homogeneous(cores, batch, n, t))
    return found


def role_labels(cores: int, batch: int, plan: Plan) -> list[str]:
    """Every role a measured plan plays: a Packrat plan may also be the fat or single one."""
    roles = []
    if _shape(plan) == _shape(homogeneous(cores, batch, 1, cores)):
        roles.append("fat")
    if _shape(plan) == _shape(homogeneous(cores, batch, min(cores, batch), 1)):
        roles.append("single")
    return roles
