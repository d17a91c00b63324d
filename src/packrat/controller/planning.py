"""Where a served model's plans come from: its cores, its latency profile, its largest batch.

`Planning.optimal(b)` is the optimizer's plan for a batch of b on the model's cores, placed on
them (`allocate`); `fat()` the one instance with every core; `place(plan)` puts a plan given by
hand (`--plan`, the management API) on the cores. Plans are made and placed when first asked
for, then kept, so that a policy can ask at every batch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from packrat.errors import PlanError
from packrat.optimizer.solve import PlanTable
from packrat.optimizer.table import LatencyTable
from packrat.topology import Topology, allocate
from packrat.types import InstanceSpec, Layout, Plan


@dataclass(frozen=True)
class Planning:
    """Plans for one model: on `topology`'s cores, from `table` (None: no profile, so only
    plans given by hand and the fat instance), for batches up to `max_batch_size`."""

    topology: Topology
    table: LatencyTable | None
    max_batch_size: int
    _placed: dict[int, Plan] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def cores(self) -> int:
        """Physical cores the model may use."""
        return self.topology.num_cores

    def optimal(self, batch: int) -> Plan:
        """The optimizer's plan for `batch` (1..max_batch_size), placed on the cores.

        When no plan's profiled cells make up exactly `batch` (a batch of 7 on two cores
        profiled at 1, 2, 4, 8), this is the plan for the next batch size they do make up:
        its instances serve the smaller batch, split by thread share.

        Raises PlanError without a profile, or if no batch size up to the largest is covered."""
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
        return max(len(self.optimal(b).instances) for b in range(1, self.max_batch_size + 1))

    def layouts(self) -> tuple[Layout, ...]:
        """Every (threads, cores) an instance of an optimal plan up to max_batch_size has
        (none without a profile): the workers that let a pool whose workers cannot move
        switch between those plans without starting one. Makes every plan, as `pool_size`."""
        if self.table is None:
            return ()
        plans = (self.optimal(b) for b in range(1, self.max_batch_size + 1))
        return tuple(dict.fromkeys(layout for plan in plans for layout in plan.layout))

    def on(self, topology: Topology) -> Planning:
        """The same profile and largest batch on other cores."""
        return Planning(topology, self.table, self.max_batch_size)

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
