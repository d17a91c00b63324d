"""Lost instances replaced between batches.

A worker that dies or misses the batch deadline fails only its own sub-batch; the pool is then
degraded until a fresh worker with the same threads and cores has replaced it (seconds: it
loads the model). That happens as soon as the batch that lost it is done (`replace_soon`), and
in any case before the next batch or change of plan runs (`replace`, plan lock held), so later
requests wait instead of failing. A replacement that fails leaves the pool broken.
"""

from __future__ import annotations

import asyncio
import logging
import time

from packrat.errors import WorkerError
from packrat.pool import EngineState
from packrat.pool.protocol import InstancePool
from packrat.server.records import Listeners

logger = logging.getLogger(__name__)


class LostInstances:
    """Replaces the instances `pool` lost in a batch, under the model's plan `lock`, and
    counts them; `listeners` get how many were replaced each time."""

    def __init__(self, pool: InstancePool, label: str, lock: asyncio.Lock) -> None:
        self._pool = pool
        self._label = label
        self._lock = lock
        self._task: asyncio.Task[None] | None = None
        self.restarts_total = 0
        self.listeners: Listeners[int] = Listeners(f"restart listener of model {label}")

    def replace_soon(self) -> None:
        """Replace lost instances as soon as the running batch is done (it holds the plan
        lock), even if no other batch comes."""
        self._task = asyncio.create_task(self._replace_locked())

    async def finish(self) -> None:
        """Wait for a replacement under way, if any."""
        if self._task is not None:
            await asyncio.wait([self._task])

    async def replace(self) -> None:
        """Start fresh workers for the instances lost in a batch (plan lock held). On failure
        the pool is broken, and the next batch's requests get Unavailable."""
        if self._pool.state is not EngineState.DEGRADED:
            return
        started = time.monotonic()
        try:
            replaced = await asyncio.to_thread(self._pool.replace_lost)
        except WorkerError as exc:
            logger.error("model %s: replacing lost instances failed: %s", self._label, exc)
            return
        self.restarts_total += len(replaced)
        logger.warning(
            "model %s: lost instance(s) %s replaced in %.1f s",
            self._label, ", ".join(map(str, replaced)), time.monotonic() - started,
        )  # fmt: skip
        self.listeners(len(replaced))

    async def _replace_locked(self) -> None:
        async with self._lock:
            await self.replace()
