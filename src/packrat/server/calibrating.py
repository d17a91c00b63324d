"""A served model's profile corrected by the batches it serves (`controller.calibration`).

After every batch, each instance's sub-batch is compared with its cell of the table the model
plans on. When a cell drifts, the server logs it (with the way to re-measure the profile),
counts it for `/metrics` and the describe API, and plans on the corrected table from then on:
new plans are made off the event loop, then swapped in between two batches (the plan lock),
and the batches are split by the corrected table too. The running plan stays until the policy
moves off it at a next batch, as for any other batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from packrat.controller.calibration import Calibration, CalibrationConfig, Correction
from packrat.optimizer.table import LatencyTable
from packrat.pool.protocol import InstancePool
from packrat.server.records import BatchRecord, Listeners

logger = logging.getLogger(__name__)

DESCRIBED_CORRECTIONS = 10
"""Corrections `describe()` lists (the latest); all are counted."""

Replan = Callable[[LatencyTable], Any]
"""Plans on a corrected table from the next batch on (a coroutine function)."""


class Calibrating:
    """Checks `pool`'s batches against `table`; `replan(table)` moves the model onto each
    corrected table. `listeners` get every correction."""

    def __init__(
        self,
        pool: InstancePool,
        table: LatencyTable,
        config: CalibrationConfig,
        label: str,
        replan: Replan,
    ) -> None:
        self._pool = pool
        self._calibration = Calibration(table, config)
        self._label = label
        self._replan = replan
        self._planned = table  # the table the model plans on now
        self._task: asyncio.Task[None] | None = None
        self.listeners: Listeners[Correction] = Listeners(f"correction listener of model {label}")

    @property
    def corrections_total(self) -> int:
        return len(self._calibration.corrections)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the settings, how many cells were corrected, the latest corrections."""
        config = self._calibration.config
        latest = self._calibration.corrections[-DESCRIBED_CORRECTIONS:]
        return {
            "samples": config.samples,
            "tolerance": config.tolerance,
            "corrections_total": self.corrections_total,
            "corrections": [correction.to_json() for correction in latest],
        }

    def observe(self, record: BatchRecord) -> None:
        """A batch listener: `record` ran on the pool's plan now (switches happen between
        batches, so it is the plan the batch ran on)."""
        threads = [instance.threads for instance in self._pool.plan.instances]
        made = self._calibration.observe(threads, record.sizes, record.compute_s)
        for correction in made:
            logger.warning(
                "model %s: served batches are off the profile at %s; planning on the served "
                "latency from now on (to measure the profile again: packrat profile MODEL "
                "--fresh)",
                self._label, correction.describe(),
            )  # fmt: skip
            self.listeners(correction)
        if made and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._replan_latest())

    async def stop(self) -> None:
        """Cancel a re-planning under way, if any."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])

    async def _replan_latest(self) -> None:
        """Plan on the calibration's table until no correction came meanwhile."""
        while self._planned is not self._calibration.table:
            table = self._calibration.table
            try:
                await self._replan(table)
            except Exception:
                logger.exception("model %s: planning on the corrected profile failed", self._label)
                return
            self._planned = table
