"""How a model's requests are batched: the settings the server's batcher and the simulator
both follow (`packrat.server.batcher`, `packrat.sim.loop`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from packrat.controller.admission import DEFAULT_MAX_QUEUE, DEFAULT_MAX_QUEUE_WAIT_MS

DEFAULT_MAX_BATCH_DELAY_MS = 0.0
"""A batch leaves as soon as the model is free, with whatever is queued then (as Triton's
dynamic batcher by default): under load requests queue while a batch runs, so batches grow
with the load by themselves, and a lone request never waits for company that is not coming.
A delay adds to every request's latency when the load is light (one client: all of it)."""


@dataclass(frozen=True)
class BatchingConfig:
    """How one model's requests are batched.

    max_batch_size: most requests in one batch (>= 1).
    max_batch_delay_ms: longest a batch waits for more requests after its first one arrived,
        in milliseconds (>= 0; 0 dispatches whatever is waiting at once).
    max_queue: most requests waiting (not counting the running batch); more are refused
        with Unavailable, and the model is overloaded until its queue drains.
    max_queue_wait_ms: while the model is overloaded, its queue is held to what this many ms
        of batches serve: queued / max_batch_size full batches at the expected time of a full
        batch, plus what is left of the running batch (`packrat.controller.admission`). 0: not
        held, `max_queue` alone bounds it.
    """

    max_batch_size: int = 8
    max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS
    max_queue: int = DEFAULT_MAX_QUEUE
    max_queue_wait_ms: float = DEFAULT_MAX_QUEUE_WAIT_MS

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BatchingConfig.{name} must be an int >= 1, got {value!r}")
        wait = self.max_queue_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait >= 0:
            raise ValueError(
                f"BatchingConfig.max_queue_wait_ms must be a number >= 0, got {wait!r}"
            )
        delay = self.max_batch_delay_ms
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not (math.isfinite(delay) and delay >= 0)
        ):
            raise ValueError(
                f"BatchingConfig.max_batch_delay_ms must be a finite number >= 0, got {delay!r}"
            )

    def with_flat(
        self, settings: Mapping[str, Any], owner: str = "BatchingConfig"
    ) -> BatchingConfig:
        """This config with the `BATCHING_KEYS` that `settings` gives over it (other keys are
        not read): how a TOML table, the command line, config.properties or a registration,
        which spell the settings as flat keys, make one. ValueError for a value out of range,
        naming the key as `owner.key` (just `key` if `owner` is "")."""
        given = {key: settings[key] for key in BATCHING_KEYS if key in settings}
        try:
            return replace(self, **given)
        except ValueError as exc:
            problem = str(exc).removeprefix("BatchingConfig.")
            raise ValueError(f"{owner}.{problem}" if owner else problem) from None


BATCHING_KEYS = tuple(f.name for f in fields(BatchingConfig))
"""The batching settings' names, which are also their flat keys: [server] and [[models]] in
the TOML file, `packrat serve --max-batch-size` and the like, config.properties' mapped
settings, registration options (`BatchingConfig.with_flat`)."""


def without_batching(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` less its `BATCHING_KEYS`: what is left for the config holding a batching."""
    return {key: value for key, value in settings.items() if key not in BATCHING_KEYS}
