"""Where a served model's plans come from: its cores, its latency profile, its largest batch.

`Planning.optimal(b)` is the optimizer's plan for a batch of b on the model's cores, placed on
them (`allocate`); `fat()` the one instance with every core; `place(plan)` puts a plan given by
hand (`--plan`, the management API) on the cores. Plans are made and placed when first asked
for, then kept, so that a policy can ask at every batch.

With `max_layouts` (a model whose workers cannot move: one worker per (threads, cores) any plan
has), when the optimal plans up to the largest batch have more layouts than that, `optimal(b)`
is instead the fastest plan on the layouts `keep_layouts` keeps (`controller.kept_layouts`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from packrat.controller.kept_layouts import KeptLayouts, keep_layouts
from packrat.errors import PlanError
from packrat.optimizer.solve import PlanTable
from packrat.optimizer.table import LatencyTable
from packrat.topology import Topology, allocate
from packrat.types import InstanceSpec, Layout, Plan


@dataclass(frozen=True)
class LayoutBudget:
    """Layouts (workers that cannot move) kept within `Planning.max_layouts`, of those the
    optimal plans need, and the predicted latency of the plans on them relative to the
    optimal plans', the most and the mean over batch sizes 1..max_batch_size."""

    kept: int
    needed: int
    max_slowdown: float
    mean_slowdown: float

    def to_json(self) -> dict[str, float]:
        return {
            "kept": self.kept,
            "needed": self.needed,
            "max_slowdown": round(self.max_slowdown, 4),
            "mean_slowdown": round(self.mean_slowdown, 4),
        }


@dataclass(frozen=True)
class Planning:
    """Plans for one model: on `topology`'s cores, from `table` (None: no profile, so only
    plans given by hand and the fat instance), for batches up to `max_batch_size`, on at most
    `max_layouts` distinct (threads, cores) (None: no limit), keeping the layouts `held` (the
    workers running) where others are no faster."""

    topology: Topology
    table: LatencyTable | None
    max_batch_size: int
    max_layouts: int | None = None
    held: tuple[Layout, ...] = field(default=(), compare=False)
    _placed: dict[int, Plan] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_layouts is not None and self.max_layouts < 1:
            raise PlanError(f"max_layouts must be >= 1, got {self.max_layouts}")

    @property
    def cores(self) -> int:
        """Physical cores the model may use."""
        return self.topology.num_cores

    def optimal(self, batch: int) -> Plan:
        """The optimizer's plan for `batch` (1..max_batch_size), placed on the cores.

        When no plan's profiled cells make up exactly `batch` (a batch of 7 on two cores
        profiled at 1, 2, 4, 8), this is the plan for the next batch size they do make up:
        its instances serve the smaller batch, split by thread share.

        With `max_layouts` exceeded by the optimal plans, the fastest plan on the layouts
        kept instead; the first call then makes every plan (as `layouts`).

        Raises PlanError without a profile, or if no batch size up to the largest is covered."""
        kept = self._kept
        if kept is not None:
            if not 1 <= batch <= self.max_batch_size:
                raise PlanError(f"batch must be in 1..{self.max_batch_size}, got {batch}")
            return kept.plans[batch - 1]
        return self._optimal(batch)

    def _optimal(self, batch: int) -> Plan:
        plan = self._placed.get(batch)
        if plan is None:
            plan = allocate(self._cover(batch), self.topology)
            self._placed[batch] = plan
        return plan

    def fat(self) -> Plan:
        """One instance with every core, for the largest batch (latency from the profile if
        it has that cell, else nan)."""
        cores, batch = self.cores, self.max_batch_size
        latency = self.table.get(cores, batch) if self.table is not None else None
        plan = Plan(
            cores=cores,
            batch=batch,
            latency_ms=math.nan if latency is None else latency,
            instances=(InstanceSpec(threads=cores, batch=batch),),
        )
        return allocate(plan, self.topology)

    def place(self, plan: Plan) -> Plan:
        """`plan` on the model's cores: kept as it is if every instance has cores already,
        else allocated (TopologyError if it needs more cores than the model has)."""
        if all(instance.cores for instance in plan.instances):
            return plan
        return allocate(plan, self.topology)

    def pool_size(self) -> int:
        """Workers that let every optimal plan up to max_batch_size start without loading a
        model: the most instances any of them has (1 without a profile).

        This makes and places every one of those plans, so that `optimal` is a lookup from
        then on; it takes up to seconds (128 cores, batches up to 1024: about 4 s), so a
        server calls it off its event loop."""
        if self.table is None:
            return 1
        return max(len(self.optimal(b).instances) for b in self._batches)

    def layouts(self) -> tuple[Layout, ...]:
        """Every (threads, cores) an instance of an optimal plan up to max_batch_size has
        (none without a profile): the workers that let a pool whose workers cannot move
        switch between those plans without starting one. Makes every plan, as `pool_size`."""
        if self.table is None:
            return ()
        kept = self._kept
        if kept is not None:
            return kept.layouts
        return self._optimal_layouts()

    def budget(self) -> LayoutBudget | None:
        """How `max_layouts` changed the plans: None where it did not (the optimal plans fit
        in it, or no profile). Makes every plan, as `layouts`."""
        kept = self._kept
        if kept is None:
            return None
        slowdown = kept.slowdown([self._optimal(b).latency_ms for b in self._batches])
        return LayoutBudget(
            kept=len(kept.layouts),
            needed=len(self._optimal_layouts()),
            max_slowdown=max(slowdown),
            mean_slowdown=sum(slowdown) / len(slowdown),
        )

    def on(self, topology: Topology) -> Planning:
        """The same profile, largest batch and most layouts on other cores."""
        return Planning(topology, self.table, self.max_batch_size, self.max_layouts)  # none held

    @property
    def _batches(self) -> range:
        return range(1, self.max_batch_size + 1)

    def _optimal_layouts(self) -> tuple[Layout, ...]:
        plans = (self._optimal(b) for b in self._batches)
        return tuple(dict.fromkeys(layout for plan in plans for layout in plan.layout))

    @functools.cached_property
    def _kept(self) -> KeptLayouts | None:
        """The layouts kept and their plans, if the optimal plans need more than
        `max_layouts`; None otherwise (or without a profile)."""
        if self.table is None or self.max_layouts is None:
            return None
        if len(self._optimal_layouts()) <= self.max_layouts:
            return None
        candidates = [*(self._optimal(b) for b in self._batches), self.fat()]
        return keep_layouts(
            candidates, self.table, self.max_batch_size, self.max_layouts, self.held
        )

    def _cover(self, batch: int) -> Plan:
        """The unplaced optimal plan for `batch`, or for the next batch size with one."""
        try:
            return self._solver.plan(self.cores, batch)
        except PlanError:
            for larger in range(batch + 1, self.max_batch_size + 1):
                try:
                    return self._solver.plan(self.cores, larger)
                except PlanError:
                    continue
            raise

    @functools.cached_property
    def _solver(self) -> PlanTable:
        if self.table is None:
            raise PlanError("no latency profile to plan with: pin a plan, or give a profile")
        return PlanTable(self.table, self.cores, self.max_batch_size)
