"""The engine's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from packrat.config import cache_dir


def default_weights_dir() -> Path:
    """`<cache dir>/weights` (~/.cache/packrat/weights by default; see `packrat.config`)."""
    return cache_dir() / "weights"


@dataclass(frozen=True)
class EngineConfig:
    """How an `Engine` starts, waits for and stops its workers.

    start_timeout_s: seconds `start()` may take in all (weight export, then every worker
        booting, concurrently) before it gives up and raises WorkerError.
    batch_timeout_s: seconds `infer()` waits for all instances' replies; None waits forever
        (a dead worker is still reported at once). Also bounds each timed run of `measure()`.
    stop_timeout_s: seconds `close()` waits for workers to exit after Stop before it
        terminates and then kills them.
    weights_dir: directory of shared weights files; None means `default_weights_dir()`.
    share_weights: map one shared copy of the weights into every worker instead of one
        private copy each (models whose handler returns no `shared_tensors()` keep theirs).
    keep_freed_memory: keep freed memory in each worker's heap instead of letting glibc map
        and unmap every large activation per batch (see `packrat.pool.malloc`: up to ~2x lower
        latency for CNNs at large batches, at the cost of holding the peak batch's memory).
    shared_tensors: move the bytes of request and output tensors (and numpy arrays) between
        the engine and each worker through shared memory instead of the pipe (see
        `packrat.pool.arena`); other objects always go through the pipe.
    """

    start_timeout_s: float = 300.0
    batch_timeout_s: float | None = None
    stop_timeout_s: float = 5.0
    weights_dir: Path | None = None
    share_weights: bool = True
    keep_freed_memory: bool = True
    shared_tensors: bool = True

    def __post_init__(self) -> None:
        _check_positive("start_timeout_s", self.start_timeout_s)
        if self.batch_timeout_s is not None:
            _check_positive("batch_timeout_s", self.batch_timeout_s)
        _check_positive("stop_timeout_s", self.stop_timeout_s)
        if self.weights_dir is not None and not isinstance(self.weights_dir, Path):
            raise ValueError(
                f"EngineConfig.weights_dir must be a pathlib.Path or None, got {self.weights_dir!r}"
            )
        for name in ("share_weights", "keep_freed_memory", "shared_tensors"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EngineConfig.{name} must be a bool, got {getattr(self, name)!r}")

    def resolved_weights_dir(self) -> Path:
        """`weights_dir`, or the default when it is None."""
        return self.weights_dir if self.weights_dir is not None else default_weights_dir()


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"EngineConfig.{name} must be a number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"EngineConfig.{name} must be a finite number > 0, got {value!r}")
