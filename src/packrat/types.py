"""Values shared across Packrat: instances and plans.

Vocabulary: an *instance* is one running copy of a model with `threads` intra-op threads serving
`batch` requests of each batch; a *plan* is the set of instances that serve one batch size on a
core budget; a *profile* is the measured latency table L(threads, batch); the *fat instance* is one
instance with every core.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Mapping
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


Layout = tuple[int, tuple[int, ...]]
"""An instance's threads and the cores it is pinned to: what a worker running it must have."""


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
    def layout(self) -> tuple[Layout, ...]:
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
class CellMap:
    """An integer per cell (threads, batch), run-length coded along the batch: which backend
    of a mix runs the cell (`controller.backend_mix`), or the chunks an instance splits its
    batch into (`optimizer.chunks`).

    runs: per thread count, (first batch, value) where the value changes, by first batch. A
        cell takes the run that holds its batch, on the nearest thread count at or below its
        own; a cell below every run takes 0.
    """

    runs: Mapping[int, tuple[tuple[int, int], ...]]

    def at(self, threads: int, batch: int) -> int:
        """The value of the cell (threads, batch). Two bisections: handlers ask per batch."""
        thread_counts, firsts = self._index
        row = bisect.bisect_right(thread_counts, threads) - 1
        if row < 0:
            return 0
        runs = self.runs[thread_counts[row]]
        return runs[max(bisect.bisect_right(firsts[row], batch) - 1, 0)][1]

    @functools.cached_property
    def _index(self) -> tuple[list[int], list[list[int]]]:
        """The thread counts in order, and each one's first batches."""
        thread_counts = sorted(self.runs)
        return thread_counts, [[first for first, _ in self.runs[t]] for t in thread_counts]

    def values(self) -> set[int]:
        """Every value some cell takes."""
        return {value for row in self.runs.values() for _, value in row}

    def describe(self, last_batch: int, name: Callable[[int], str]) -> dict[str, list[str]]:
        """Per thread count, each run's batches and its value by `name`, e.g. {"1": ["1-8
        onnxruntime fp32", "9-64 openvino fp32"]}; JSON-ready, for describe."""
        described: dict[str, list[str]] = {}
        for threads, row in sorted(self.runs.items()):
            ends = [first - 1 for first, _ in row[1:]] + [last_batch]
            described[str(threads)] = [
                f"{first}-{end} {name(value)}" if end > first else f"{first} {name(value)}"
                for (first, value), end in zip(row, ends, strict=True)
            ]
        return described

    @classmethod
    def from_cells(cls, cells: Mapping[tuple[int, int], int]) -> CellMap:
        """The map of {(threads, batch): value}, coded in runs."""
        runs: dict[int, list[tuple[int, int]]] = {}
        for (threads, batch), value in sorted(cells.items()):
            row = runs.setdefault(threads, [])
            if not row or row[-1][1] != value:
                row.append((batch, value))
        return cls({threads: tuple(row) for threads, row in runs.items()})
