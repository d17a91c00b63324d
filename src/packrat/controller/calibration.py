"""The profile checked against the batches served, as a pure policy.

A profile is measured once and cached. A cell measured while something else loaded the
machine stays wrong for as long as the cache lives, and so does every plan made from it. Two
such cells were seen in issue 15's runs: BERT-base's two-thread cells on ONNX Runtime read
1.4-1.6x their true latency, so the plan left the two-thread instance out; and GPT-2 on a Xeon
ran its batches of one on a single thread, half its cores idle, 1.6x slower than it could.

Every sub-batch a served model runs is a measurement of one cell: `threads` and `batch` of its
instance, and the seconds the worker computed (`BatchRecord.compute_s`). The calibration keeps
the last `samples` of them per cell. Once a cell's window is full and its median is off the
profile's value by more than `tolerance` either way (a ratio: 0.3 means above 1.3x or below
1/1.3x) and by at least `floor_ms`, the cell is corrected to that median and its window starts
again. The caller then plans on the corrected table: a plan whose cells turned out slow gives
way to the next best, whose own cells are then checked in turn.

It corrects the cells that run, not the ones a wrong profile keeps from running: a cell
measured too slow is only found out by measuring it again (`packrat profile MODEL --fresh`).

No clock, no I/O: the server and the simulator can run the same code.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

from packrat.optimizer.table import LatencyTable

CALIBRATION_SAMPLES = 8
"""Sub-batches per cell whose median is compared with the profile: one slow batch (the first
after a switch runs about 15% slower) or a burst of noise does not move a plan."""

CALIBRATION_TOLERANCE = 0.3
"""How far (as a ratio, either way) a cell's median may be from the profile before it is
corrected: this machine drifts 10-30% within minutes, which moves every cell alike and
changes no plan; the profile errors seen were 1.4-1.6x on some cells only."""

CALIBRATION_FLOOR_MS = 1.0
"""Least difference in ms that counts: sub-millisecond cells jitter by more than 30%."""


@dataclasses.dataclass(frozen=True)
class Correction:
    """The cell of `threads` and `batch` was profiled at `profiled_ms` and served in
    `served_ms` (the median of `samples` sub-batches)."""

    threads: int
    batch: int
    profiled_ms: float
    served_ms: float
    samples: int

    @property
    def ratio(self) -> float:
        return self.served_ms / self.profiled_ms

    def describe(self) -> str:
        return (
            f"{self.threads} threads, batch {self.batch}: served in {self.served_ms:.1f} ms, "
            f"profiled {self.profiled_ms:.1f} ms ({self.ratio:.2f}x, median of {self.samples})"
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """When served sub-batches correct a cell (the module's docstring says how)."""

    samples: int = CALIBRATION_SAMPLES
    tolerance: float = CALIBRATION_TOLERANCE
    floor_ms: float = CALIBRATION_FLOOR_MS

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int):
            raise ValueError(f"CalibrationConfig.samples must be an int, got {self.samples!r}")
        if self.samples < 1:
            raise ValueError(f"CalibrationConfig.samples must be >= 1, got {self.samples}")
        if not (math.isfinite(self.tolerance) and self.tolerance > 0):
            raise ValueError(f"CalibrationConfig.tolerance must be > 0, got {self.tolerance!r}")
        if not (math.isfinite(self.floor_ms) and self.floor_ms >= 0):
            raise ValueError(f"CalibrationConfig.floor_ms must be >= 0, got {self.floor_ms!r}")

    def drifted(self, profiled_ms: float, served_ms: float) -> bool:
        """Whether `served_ms` is too far from `profiled_ms` to keep planning on the latter."""
        ratio = served_ms / profiled_ms
        off = ratio > 1.0 + self.tolerance or ratio < 1.0 / (1.0 + self.tolerance)
        return off and abs(served_ms - profiled_ms) >= self.floor_ms


class Calibration:
    """Served sub-batches against `table` (the table the model plans on); `table` is then
    the corrected one, and `corrections` every correction made, oldest first."""

    def __init__(self, table: LatencyTable, config: CalibrationConfig | None = None) -> None:
        self.table = table
        self.config = config or CalibrationConfig()
        self.corrections: list[Correction] = []
        self._served: dict[tuple[int, int], collections.deque[float]] = {}

    def observe(
        self, threads: Sequence[int], sizes: Sequence[int], compute_s: Sequence[float]
    ) -> list[Correction]:
        """One batch: instance j, of `threads[j]` threads, computed `sizes[j]` requests in
        `compute_s[j]` seconds (idle and failed instances: size or time 0, skipped). Returns
        the corrections this batch completed (`table` already holds them); usually none."""
        made: list[Correction] = []
        for t, b, seconds in zip(threads, sizes, compute_s, strict=True):
            profiled = self.table.get(t, b) if b > 0 and seconds > 0 else None
            if profiled is None:
                continue  # idle, failed, or a cell the table does not have
            window = self._served.setdefault((t, b), collections.deque(maxlen=self.config.samples))
            window.append(1000.0 * seconds)
            if len(window) < self.config.samples:
                continue
            served = statistics.median(window)
            if self.config.drifted(profiled, served):
                made.append(Correction(t, b, profiled, served, len(window)))
                window.clear()
        if made:
            self.table = self.table.with_cells({(c.threads, c.batch): c.served_ms for c in made})
            self.corrections.extend(made)
        return made
