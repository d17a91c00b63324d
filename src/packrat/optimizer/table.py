"""The latency table L(threads, batch) that the optimizer consumes. Pure numpy, no torch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, eq=False)
class LatencyTable:
    """Mean batch latency in ms of one instance, per (threads, batch) cell.

    `threads` and `batches` are strictly increasing; `latency_ms[i, j]` is L(threads[i],
    batches[j]), NaN where the cell was not profiled. Latencies must be positive.
    """

    threads: tuple[int, ...]
    batches: tuple[int, ...]
    latency_ms: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        for label, axis in (("threads", self.threads), ("batches", self.batches)):
            if not axis:
                raise ValueError(f"LatencyTable.{label} is empty")
            if any(v < 1 for v in axis) or any(
                a >= b for a, b in zip(axis, axis[1:], strict=False)
            ):
                raise ValueError(f"LatencyTable.{label} must be increasing positive ints: {axis}")
        shape = (len(self.threads), len(self.batches))
        if self.latency_ms.shape != shape:
            raise ValueError(
                f"LatencyTable.latency_ms has shape {self.latency_ms.shape}, not {shape}"
            )
        finite = self.latency_ms[np.isfinite(self.latency_ms)]
        if finite.size == 0:
            raise ValueError("LatencyTable has no profiled cell")
        if (finite <= 0).any():
            raise ValueError("LatencyTable latencies must be > 0 ms")

    @classmethod
    def from_cells(cls, cells: Mapping[tuple[int, int], float]) -> LatencyTable:
        """Build from {(threads, batch): mean latency in ms}."""
        threads = tuple(sorted({t for t, _ in cells}))
        batches = tuple(sorted({b for _, b in cells}))
        ti = {t: i for i, t in enumerate(threads)}
        bi = {b: j for j, b in enumerate(batches)}
        lat = np.full((len(threads), len(batches)), np.nan)
        for (t, b), ms in cells.items():
            lat[ti[t], bi[b]] = ms
        return cls(threads, batches, lat)

    def cells(self) -> Iterable[tuple[int, int, float]]:
        """(threads, batch, latency_ms) of every profiled cell."""
        for i, t in enumerate(self.threads):
            for j, b in enumerate(self.batches):
                ms = float(self.latency_ms[i, j])
                if np.isfinite(ms):
                    yield t, b, ms

    def get(self, threads: int, batch: int) -> float | None:
        """L(threads, batch) in ms, or None where not profiled."""
        if threads not in self.threads or batch not in self.batches:
            return None
        ms = float(self.latency_ms[self.threads.index(threads), self.batches.index(batch)])
        return ms if np.isfinite(ms) else None

    @property
    def max_threads(self) -> int:
        return self.threads[-1]
