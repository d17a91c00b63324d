"""Which plans a Packrat server of the end-to-end suite (benchmarks/e2e.py) ran in each phase,
and where two systems ran the same plan.

A Packrat server says what it runs through its management API (`GET /models/{m}`: the plan
and `switches_total`; `GET /models/{m}/switches`: every change of plan, from, to, when) and
its metrics (`packrat_reconfigurations_total`, `packrat_batch_size`). `PlanWatch` reads them
just before and just after a phase (the measured bursts of one size, or one rate);
`PhasePlans` is what it found, and from it the seconds the phase spent on each set of
instances. TorchServe runs no plan: its phases have none.

Two plans with the same instances (threads per instance) are one plan here: they differ only
in the batch they were made for, which the server's split of each batch takes care of. The
`auto` server's `<1,2,1>` and the fat server's `<1,2,8>` on 2 cores are both one instance of
every core: the fat plan, on the same workers, running the same batches the same way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.client import describe, metric, scrape

Shape = tuple[int, ...]
"""The threads of each instance of a plan, largest first: (2,) is the fat plan on 2 cores."""

_GROUP = re.compile(r"<\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*>")


def shape(plan: str) -> Shape:
    """The instances of a plan written `<count,threads,batch> + ...`, as their threads."""
    threads = [int(t) for n, t, _ in _GROUP.findall(plan) for _ in range(int(n))]
    return tuple(sorted(threads, reverse=True))


def shape_name(instances: Shape, cores: int) -> str:
    """A plan's instances in words, the fat plan and T single-thread instances by name."""
    if instances == (cores,):
        return f"the fat plan (1 instance of {cores} threads)"
    if instances == (1,) * cores:
        return f"{cores} single-thread instances"
    counts: dict[int, int] = {}
    for threads in instances:
        counts[threads] = counts.get(threads, 0) + 1
    return " + ".join(f"<{n},{t},b>" for t, n in counts.items())


@dataclass
class PhasePlans:
    """What a Packrat server ran during one phase: the plan at its start, each change of plan
    (from, to, `at_s` from the phase's start, `took_ms`), the changes counted by the server
    (`switches_total`) and by its metrics, and the mean requests per batch."""

    start_plan: str
    seconds: float
    switches: list[dict[str, Any]] = field(default_factory=list)
    switches_counted: int = 0
    switches_in_metrics: float = 0.0
    batch_size: float | None = None

    def plan_seconds(self) -> dict[Shape, float]:
        """Seconds of the phase on each set of instances."""
        found: dict[Shape, float] = {}
        running, since = shape(self.start_plan), 0.0
        for switch in sorted(self.switches, key=lambda s: s["at_s"]):
            at = min(max(switch["at_s"], since), self.seconds)
            found[running] = found.get(running, 0.0) + at - since
            running, since = shape(switch["to"]), at
        found[running] = found.get(running, 0.0) + self.seconds - since
        return {s: seconds for s, seconds in found.items() if seconds > 0 or len(found) == 1}

    def only(self) -> Shape | None:
        """The one set of instances the phase ran on; None if it ran on several."""
        seconds = self.plan_seconds()
        return next(iter(seconds)) if len(seconds) == 1 and not self.switches else None

    @staticmethod
    def from_json(raw: dict[str, Any]) -> PhasePlans:
        return PhasePlans(**raw)


class PlanWatch:
    """Reads a Packrat server's plan, switches and batch sizes around one phase."""

    def __init__(self, management: str, metrics: str, model: str) -> None:
        self._management, self._metrics, self._model = management, metrics, model
        self._label = f'model="{model}"'
        self._started_unix_s = 0.0
        self._described: dict[str, Any] = {}
        self._before: dict[str, float] = {}

    def start(self) -> None:
        """Just before the phase's first request."""
        self._started_unix_s = time.time()
        self._described = describe({"management": self._management}, self._model)
        self._before = scrape(self._metrics)

    def stop(self) -> PhasePlans:
        """Just after the phase's last answer: what ran since `start`."""
        ended = time.time()
        after = scrape(self._metrics)
        url = f"{self._management}/models/{self._model}/switches"
        logged = httpx.get(url, timeout=30).json()
        total = describe({"management": self._management}, self._model)["switches_total"]
        switches = [
            {"from": s["from"], "to": s["to"], "at_s": s["at_unix_s"] - self._started_unix_s,
             "took_ms": s["took_ms"], "reason": s.get("reason", "")}
            for s in logged
            if s["at_unix_s"] >= self._started_unix_s
        ]  # fmt: skip
        return PhasePlans(
            start_plan=self._described["plan"]["describe"],
            seconds=ended - self._started_unix_s,
            switches=switches,
            switches_counted=total - self._described["switches_total"],
            switches_in_metrics=self._delta(after, "packrat_reconfigurations_total"),
            batch_size=self._batch_size(after),
        )

    def _delta(self, after: dict[str, float], name: str) -> float:
        return metric(after, name, self._label) - metric(self._before, name, self._label)

    def _batch_size(self, after: dict[str, float]) -> float | None:
        count = self._delta(after, "packrat_batch_size_count")
        return self._delta(after, "packrat_batch_size_sum") / count if count else None


# --- where two systems ran the same plan --------------------------------------------------------


def same_plan_rounds(
    auto: Sequence[PhasePlans | None], other: Sequence[PhasePlans | None]
) -> list[int]:
    """The rounds (from 1) in which both ran one and the same set of instances throughout;
    `auto` and `other` hold each round's phase, in round order (None: no such phase)."""
    found = []
    for number, (mine, theirs) in enumerate(zip(auto, other, strict=True), start=1):
        if mine is None or theirs is None:
            continue
        ran = mine.only()
        if ran is not None and ran == theirs.only():
            found.append(number)
    return found


def plans_text(phases: Sequence[PhasePlans | None], cores: int) -> str:
    """What ran in a phase over the rounds, for a table cell: the one plan, or the share of
    time on each and the switches per round."""
    present = [p for p in phases if p is not None]
    if not present:
        return "-"
    shares: dict[Shape, float] = {}
    for phase in present:
        for instances, seconds in phase.plan_seconds().items():
            shares[instances] = shares.get(instances, 0.0) + seconds
    switches = [len(p.switches) for p in present]
    if len(shares) == 1 and not any(switches):
        return f"{short(next(iter(shares)), cores)} throughout"
    total = sum(shares.values()) or 1.0
    parts = ", ".join(
        f"{short(s, cores)} {seconds / total:.0%}"
        for s, seconds in sorted(shares.items(), key=lambda kv: -kv[1])
    )
    return f"{parts}; switches per round {', '.join(map(str, switches))}"


def short(instances: Shape, cores: int) -> str:
    """A plan's instances for a table cell: fat, Tx1, or <n,t,b> groups."""
    if instances == (cores,):
        return "fat"
    if instances == (1,) * cores:
        return f"{cores}x1"
    return shape_name(instances, cores)
