"""Values shared across Packrat: instances and plans.

Vocabulary: an *instance* is one running copy of a model with `threads` intra-op threads serving
`batch` requests of each batch; a *plan* is the set of instances that serve one batch size on a
core budget; a *profile* is the measured latency table L(threads, batch); the *fat instance* is one
instance with every core.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class InstanceSpec:
    """One instance of a plan: `threads` intra-op threads on `cores`, serving `batch` requests.

    `cores` is empty until the allocator (`packrat.topology`) has placed the instance.
    """

    threads: int
    batch: int
    cores: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"InstanceSpec.threads must be >= 1, got {self.threads}")
        if self.batch < 1:
            raise ValueError(f"InstanceSpec.batch must be >= 1, got {self.batch}")
        if self.cores and len(self.cores) != self.threads:
            raise ValueError(
                f"InstanceSpec.cores must hold one core per thread: {self.threads} threads, "
                f"cores {list(self.cores)}"
            )


@dataclass(frozen=True)
class Plan:
    """The instances that serve a batch of `batch` requests within a budget of `cores` cores.

    `latency_ms` is the predicted batch latency: the slowest instance's profiled latency.
    Instances are ordered by (threads, batch) descending so that equal plans compare equal.
    """

    cores: int
    batch: int
    latency_ms: float
    instances: tuple[InstanceSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        used = sum(i.threads for i in self.instances)
        if used > self.cores:
            raise ValueError(f"Plan uses {used} cores but its budget is {self.cores}")
        covered = sum(i.batch for i in self.instances)
        if covered != self.batch:
            raise ValueError(f"Plan instances cover batch {covered}, not {self.batch}")

    @property
    def cores_used(self) -> int:
        return sum(i.threads for i in self.instances)

    @property
    def layout(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """(threads, cores) of each instance, in order: what the running workers must match;
        two plans with the same layout differ only in how a batch is split."""
        return tuple((i.threads, i.cores) for i in self.instances)

    def describe(self) -> str:
        """The plan in the paper's notation <count, threads, batch>, e.g. `<1,6,8> + <2,4,4>`."""
        groups: dict[tuple[int, int], int] = {}
        for inst in self.instances:
            key = (inst.threads, inst.batch)
            groups[key] = groups.get(key, 0) + 1
        ordered = sorted(groups.items(), key=lambda kv: (-kv[0][0], -kv[0][1]))
        return " + ".join(f"<{n},{t},{b}>" for (t, b), n in ordered)


_GROUP = re.compile(r"<\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*>")


def parse_plan(text: str, cores: int | None = None) -> Plan:
    """A plan from the paper's notation, e.g. `<2,1,8>` or `<1,6,8> + <2,4,4>`.

    Each group is <count, threads, batch>. `cores` is the budget (default: the cores used).
    Raises ValueError naming what does not parse.
    """
    groups = _GROUP.findall(text)
    rest = _GROUP.sub("", text).replace("+", "").strip()
    if not groups or rest:
        raise ValueError(
            f"cannot read plan {text!r}: write <count,threads,batch> groups joined by '+', "
            "e.g. <2,1,8> + <1,2,4>"
        )
    instances = tuple(
        InstanceSpec(threads=int(t), batch=int(b)) for n, t, b in groups for _ in range(int(n))
    )
    if not instances:
        raise ValueError(f"plan {text!r} has no instances")
    used = sum(i.threads for i in instances)
    return Plan(
        cores=used if cores is None else cores,
        batch=sum(i.batch for i in instances),
        latency_ms=float("nan"),
        instances=instances,
    )


@dataclass(frozen=True)
class CellOwners:
    """Which of several backends runs each cell (threads, batch) of a model served on a mix
    of them (`controller.backend_mix`, `models.mixed_source`).

    runs: per thread count, (first batch, owner) where the owner changes, by first batch;
        an owner is an index into the mix's backends. A batch runs on the run that holds it,
        on the nearest thread count at or below its own; a cell below every run on 0.
    """

    runs: Mapping[int, tuple[tuple[int, int], ...]]

    def owner(self, threads: int, batch: int) -> int:
        """The index of the backend that runs `batch` requests on `threads` threads."""
        profiled = [t for t in self.runs if t <= threads]
        if not profiled:
            return 0
        row = self.runs[max(profiled)]
        at = bisect.bisect_right([first for first, _ in row], batch) - 1
        return row[max(at, 0)][1]

    def owners(self) -> set[int]:
        """Every index that owns some cell."""
        return {index for row in self.runs.values() for _, index in row}
