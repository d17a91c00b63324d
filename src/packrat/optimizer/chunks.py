"""An instance may run its batch as consecutive smaller chunks, when that is faster.

Batch latency is not linear in the batch: past a size, each request costs more, as the
activations outgrow the caches. On the AMD machine, one thread: bert-base 274 ms per request
at batch 8, 395 at batch 64; ResNet-50 105 at 8, 129 at 64. An instance given 64 requests
then finishes sooner running eight batches of 8 one after the other than one of 64.

`chunked(table)` is the latency of the best such split, per cell:
C(t, b) = min over chunk sizes c of (b // c) L(t, c) + L(t, b % c), with L(t, 0) = 0, and the
chunk size it takes (0 where the whole batch is best). Planning on C instead of L lets the
optimizer count it; the instance then runs each batch in those chunks
(`models.chunked_source`). A split is taken only where it is at least `MIN_GAIN` faster: the
table's own noise could make up less, and every chunk costs a copy of its output.

Pure numpy. The table must have every batch size from 1 (`LatencyTable.interpolated`), as the
chunks and remainders may be any size below the batch.
"""

from __future__ import annotations

import numpy as np

from packrat.optimizer.table import LatencyTable
from packrat.types import CellMap

MIN_GAIN = 1.03
"""The least speed-up that splits a batch into chunks."""

CLOSE = 1.01
"""A smaller chunk replaces a larger one only if this much faster."""


def chunked(table: LatencyTable, *, min_gain: float = MIN_GAIN) -> tuple[LatencyTable, CellMap]:
    """The table where each cell runs in its best chunks, and the chunk size per cell (0:
    the whole batch). A table without every batch size from 1 is returned as it is, with no
    chunks."""
    if table.batches != tuple(range(1, len(table.batches) + 1)):
        return table, CellMap({})
    latency = np.where(np.isfinite(table.latency_ms), table.latency_ms, np.inf)
    largest = len(table.batches)
    batches = np.arange(1, largest + 1)
    # L(t, 0) = 0 in column 0, so a remainder of 0 adds nothing.
    padded = np.concatenate([np.zeros((latency.shape[0], 1)), latency], axis=1)

    split = np.full(latency.shape, np.inf)
    chunk = np.zeros(latency.shape, dtype=np.int64)
    # Largest chunks first; a smaller one is taken only if `CLOSE` faster: fewer calls for
    # the same time, within the table's noise.
    for size in range(largest - 1, 0, -1):
        above = batches[size:]  # the batches that make two chunks or more
        with np.errstate(invalid="ignore"):  # inf * 0 never occurs above, but nan may
            cost = (above // size) * padded[:, [size]] + padded[:, above % size]
        better = cost * CLOSE < split[:, size:]
        split[:, size:] = np.where(better, cost, split[:, size:])
        chunk[:, size:] = np.where(better, size, chunk[:, size:])
    taken = split * min_gain <= latency
    chunk = np.where(taken, chunk, 0)
    best = np.where(taken, split, latency)
    rows = np.where(np.isfinite(best), best, np.nan)
    cells = {
        (int(t), int(b)): int(chunk[i, j])
        for i, t in enumerate(table.threads)
        for j, b in enumerate(batches)
        if np.isfinite(rows[i, j])
    }
    return LatencyTable(table.threads, table.batches, rows), CellMap.from_cells(cells)
