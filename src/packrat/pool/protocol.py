"""What a served model needs of its instance pool, as a protocol.

`packrat.pool.engine.Engine` implements it with pinned worker processes; the server's runtime
(`packrat.server.runtime.ModelRuntime`) sees its pool only through it, so tests give the
runtime a fake pool that answers batches from a latency table, without processes. Every
method but the properties may block (seconds to start workers): the runtime calls them in a
thread, one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from packrat.types import Layout, Plan

if TYPE_CHECKING:
    from packrat.models.base import ModelSource
    from packrat.pool import EngineState
    from packrat.pool.config import EngineConfig
    from packrat.pool.engine import SubBatch


class PlanChange(Protocol):
    """What a change of plan did: workers re-pinned in place, workers started, seconds."""

    @property
    def retuned(self) -> int: ...

    @property
    def spawned(self) -> int: ...

    @property
    def took_s(self) -> float: ...


class InstancePool(Protocol):
    """The running instances of one model, serving one plan at a time (see `Engine` for the
    failure contract: which errors leave the pool degraded, broken, or as it was)."""

    @property
    def plan(self) -> Plan:
        """The plan being served: its instances, in order."""

    @property
    def state(self) -> EngineState:
        """RUNNING; DEGRADED after a worker was lost in a batch (`replace_lost` restores it);
        BROKEN when only `close` is left; NEW before `start`, CLOSED after `close`."""

    @property
    def pids(self) -> list[int]:
        """Pids of the plan's workers in plan order (empty before `start`)."""

    @property
    def pool_pids(self) -> list[int]:
        """Pids of every worker, the spares after the plan's."""

    def start(self) -> None:
        """Start every worker and wait until all are ready; WorkerError if one fails (none
        is left running then)."""

    def close(self) -> None:
        """Stop every worker. Idempotent."""

    def example_requests(self, batch_size: int) -> list[Any]:
        """`batch_size` example requests made by the model's handler."""

    def run_split(self, requests: Sequence[Any], sizes: Sequence[int]) -> list[SubBatch]:
        """Run `sizes[i]` consecutive requests on instance i, concurrently; one SubBatch per
        busy instance, in request order (a model error or a lost worker fails only its own).
        WorkerError if the pool cannot run batches."""

    async def run_split_on_loop(
        self, requests: Sequence[Any], sizes: Sequence[int]
    ) -> list[SubBatch]:
        """`run_split` awaited on the event loop (the one method the runtime does not call in
        a thread): it must not block the loop while the instances compute."""

    def replan(self, plan: Plan) -> None:
        """Serve `plan`, which has the same instances (`Plan.layout`), from now on."""

    def reconfigure(self, plan: Plan) -> PlanChange:
        """Serve `plan` from now on, moving workers in place and starting any missing.
        WorkerError if new workers fail to start (the old plan keeps serving) or a worker
        fails to move (the pool is broken)."""

    def reserve(self, pool_size: int, spares: Sequence[Layout] = ()) -> int:
        """Start spare workers until there are `pool_size` (for workers that cannot move: one
        on each layout of `spares` that no worker has); returns how many started.
        WorkerError if one fails to start (the pool serves on as it was)."""

    def replace_lost(self) -> list[int]:
        """Start a fresh worker in place of each one lost in a batch; the indices replaced.
        WorkerError if one fails to start (the pool is broken then)."""


class PoolFactory(Protocol):
    """Makes the pool for a model's first plan (the `Engine` class is one): `pool_size`
    workers (None: one per instance of `plan`), seeing `visible_cores` (None: every CPU this
    process may use); for workers that cannot move, spares on the layouts `spares`."""

    def __call__(
        self,
        source: ModelSource,
        plan: Plan,
        config: EngineConfig | None = None,
        *,
        pool_size: int | None = None,
        visible_cores: Sequence[int] | None = None,
        spares: Sequence[Layout] = (),
    ) -> InstancePool: ...
