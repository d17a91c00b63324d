"""The latency table L(threads, batch) that the optimizer consumes. Pure numpy, no torch."""

from __future__ import annotations

import functools
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
        cell = self._cell(threads, batch)
        if cell is None:
            return None
        ms = float(self.latency_ms[cell])
        return ms if np.isfinite(ms) else None

    def with_cells(self, cells: Mapping[tuple[int, int], float]) -> LatencyTable:
        """This table with the cells {(threads, batch): ms} set; each must be in its axes
        (KeyError naming the first that is not)."""
        rows = self.latency_ms.copy()
        for (threads, batch), ms in cells.items():
            cell = self._cell(threads, batch)
            if cell is None:
                raise KeyError(f"no cell ({threads} threads, batch {batch}) in this table")
            rows[cell] = ms
        return LatencyTable(self.threads, self.batches, rows)

    def _cell(self, threads: int, batch: int) -> tuple[int, int] | None:
        """The (row, column) of a cell in `latency_ms`, None if an axis lacks it."""
        row, column = self._thread_rows.get(threads), self._batch_columns.get(batch)
        return None if row is None or column is None else (row, column)

    @functools.cached_property
    def _thread_rows(self) -> dict[int, int]:
        return {t: i for i, t in enumerate(self.threads)}

    @functools.cached_property
    def _batch_columns(self) -> dict[int, int]:
        # Interpolated tables have every batch size up to 1024: a lookup per served
        # sub-batch (`controller.calibration`) must not scan them.
        return {b: j for j, b in enumerate(self.batches)}

    @property
    def max_threads(self) -> int:
        return self.threads[-1]

    def monotone_in_batch(self) -> LatencyTable:
        """The table the optimizer plans on: each thread count's latency non-decreasing in the
        batch, and never below what was measured.

        A measured cell becomes the largest latency measured on its threads for any batch up
        to its own; a cell not measured, below one that was, takes the next larger measured
        batch's latency (or that largest-so-far, if higher); cells above a row's largest
        measured batch stay NaN. Batch latency does not truly fall as the batch grows; where a
        profile says it does (noise: 2 of 880 pairs in the published profiles), planning on it
        would pick the cell that happened to measure fast. Under the same assumption a batch
        takes no longer than a larger one, which is what lets a row with its small batches
        unmeasured serve them. On a table that already is non-decreasing with no gaps, this
        is the identity.
        """
        rows = self.latency_ms.copy()
        for row in rows:
            measured = np.flatnonzero(np.isfinite(row))
            if measured.size == 0:
                continue
            # Each cell up to the last measured one takes the next measured value at or
            # after it, then the running maximum makes the row non-decreasing.
            nxt = measured[np.searchsorted(measured, np.arange(measured[-1] + 1))]
            row[: measured[-1] + 1] = np.maximum.accumulate(row[nxt])
        return LatencyTable(self.threads, self.batches, rows)

    def interpolated(self) -> LatencyTable:
        """The table with every batch size from 1 to the largest profiled one, each thread
        count's missing cells filled by linear interpolation between its nearest profiled
        batch sizes below and above (left NaN outside its profiled range).

        Profiles measure a few batch sizes (powers of two); without this a batch of 3 could
        only be planned as 2 + 1 on two instances, never as 3 on one. Batch latency is close
        to linear in the batch between neighbouring powers of two (e.g. BERT-base, 2 threads
        here: 234 ms at 2, 474 at 4, so 354 at 3).
        """
        batches = tuple(range(1, self.batches[-1] + 1))
        known = np.array(self.batches, dtype=np.float64)
        grid = np.array(batches, dtype=np.float64)
        rows = np.full((len(self.threads), len(batches)), np.nan)
        for i in range(len(self.threads)):
            row = self.latency_ms[i]
            profiled = np.isfinite(row)
            if not profiled.any():
                continue
            xs, ys = known[profiled], row[profiled]
            inside = (grid >= xs[0]) & (grid <= xs[-1])
            rows[i, inside] = np.interp(grid[inside], xs, ys)
        return LatencyTable(self.threads, batches, rows)
