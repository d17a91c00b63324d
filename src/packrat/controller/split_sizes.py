"""Split one batch among the running instances: pure functions over the latency table.

The server's instances are fixed (they were planned for the largest batch), but batches come
in every size up to it. For a batch of `batch` requests, `best_split` gives instance j a count
n_j >= 0 (sum n_j = batch) minimizing the predicted batch latency max_j L(t_j, n_j) over the
profiled cells; idle instances (n_j = 0) cost nothing.

How (exact, two steps as in `packrat.optimizer.solve`): first the optimal latency, by a
min-max DP over instances x requests covered; then, at that latency bound, the fewest busy
instances, by an additive DP with back-pointers. The tie-break cannot be folded into the first
DP: a prefix with lower latency but more busy instances can lose to one with higher (later
hidden) latency and fewer. Both DPs are vectorized over the requests covered, so a split costs
O(instances x profiled batch sizes) numpy operations.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from packrat.optimizer.table import LatencyTable

_NO_WAY = np.iinfo(np.int64).max // 2  # "cannot cover": larger than any instance count


def best_split(table: LatencyTable, threads: Sequence[int], batch: int) -> tuple[list[int], float]:
    """Requests per instance (in the order of `threads`) and the predicted latency in ms.

    threads: the intra-op thread count of each running instance, in instance order.
    batch: requests to split (>= 0).

    Every n_j is 0 or a batch size profiled for t_j. Among splits of minimal latency the one
    with the fewest busy instances wins; instances with equal thread counts are
    interchangeable, and among them the earlier ones get the larger counts.

    If no split covers `batch` with profiled cells (e.g. a batch of 3 with only even sizes
    profiled, or thread counts missing from the table), returns the most even split by
    thread share instead (`proportional_split`) with latency `math.inf`: the batch still runs,
    but its latency is unknown.

    Raises ValueError for no instances, a thread count < 1 or a negative batch.
    """
    _check(threads, batch)
    if batch == 0:
        return [0] * len(threads), 0.0
    options = [_options(table, t, batch) for t in threads]
    latency_ms = _min_latency(options, batch)
    if not math.isfinite(latency_ms):
        return proportional_split(threads, batch), math.inf
    sizes = _fewest_busy(options, batch, latency_ms)
    return _canonical(threads, sizes), latency_ms


def proportional_split(threads: Sequence[int], batch: int) -> list[int]:
    """The most even split of `batch` requests by thread share (largest remainders).

    Instance j gets floor(batch * t_j / sum t) requests; the requests left over go one each to
    the instances with the largest remainders, earlier instances first on ties.
    """
    _check(threads, batch)
    total = sum(threads)
    sizes = [batch * t // total for t in threads]
    left = batch - sum(sizes)
    by_remainder = sorted(range(len(threads)), key=lambda j: (-(batch * threads[j] % total), j))
    for j in by_remainder[:left]:
        sizes[j] += 1
    return sizes


class MemoizedSplit:
    """The split the server uses, memoized: `best_split` over `table`, or without a profile
    (`table` None) the split by thread share with latency nan. The server's runtime and the
    simulator both split batches with one, asking at every batch."""

    def __init__(self, table: LatencyTable | None) -> None:
        self._table = table
        self._splits: dict[tuple[tuple[int, ...], int], tuple[list[int], float]] = {}

    def split(self, threads: Sequence[int], batch: int) -> tuple[list[int], float]:
        """Requests per instance (of `threads` threads each) and the predicted latency in ms
        (inf if the profile cannot cover the split, nan without a profile). The list
        returned is shared with later calls: do not change it."""
        key = (tuple(threads), batch)
        cached = self._splits.get(key)
        if cached is None:
            if self._table is not None:
                cached = best_split(self._table, threads, batch)
            else:
                cached = proportional_split(threads, batch), math.nan
            self._splits[key] = cached
        return cached


def _check(threads: Sequence[int], batch: int) -> None:
    if not threads:
        raise ValueError("a split needs at least one instance (threads is empty)")
    if any(t < 1 for t in threads):
        raise ValueError(f"thread counts must be >= 1, got {list(threads)}")
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")


def _options(table: LatencyTable, threads: int, batch: int) -> list[tuple[int, float]]:
    """(batch size, latency ms) of the profiled cells for `threads`, sizes 1..batch."""
    cells = [(b, table.get(threads, b)) for b in table.batches if b <= batch]
    return [(b, ms) for b, ms in cells if ms is not None]


def min_latencies(table: LatencyTable, threads: Sequence[int], max_batch: int) -> list[float]:
    """The predicted latency in ms of `best_split` for every batch of 0..max_batch requests
    on instances of `threads` threads (inf where the profile cannot cover it), all at once.

    Instances of equal thread count are combined by doubling (k of them in about 2 log2 k
    min-max convolutions of O(max_batch) numpy operations each), so 128 one-thread instances
    cost about as much as a few.

    Raises ValueError for no instances, a thread count < 1 or a negative max_batch."""
    _check(threads, max_batch)
    best = np.full(max_batch + 1, np.inf)
    best[0] = 0.0
    for t, count in sorted(Counter(threads).items()):
        one = np.full(max_batch + 1, np.inf)
        one[0] = 0.0  # idle
        for b, ms in _options(table, t, max_batch):
            one[b] = ms
        while count:
            if count & 1:
                best = _min_max_convolution(best, one)
            count >>= 1
            if count:
                one = _min_max_convolution(one, one)
    return [float(ms) for ms in best]


def _min_max_convolution(
    f: npt.NDArray[np.float64], g: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """out[s] = min over a + b = s of max(f[a], g[b]): the best of two groups of instances
    sharing s requests."""
    out = np.full(len(f), np.inf)
    for a in np.flatnonzero(np.isfinite(f)):
        np.minimum(out[a:], np.maximum(f[a], g[: len(f) - a]), out=out[a:])
    return out


def _min_latency(options: list[list[tuple[int, float]]], batch: int) -> float:
    """min over splits of max_j L(t_j, n_j): best[s] is the optimum covering s requests."""
    best = np.full(batch + 1, np.inf)
    best[0] = 0.0
    for cells in options:
        new = best.copy()  # this instance idle
        for b, ms in cells:
            np.minimum(new[b:], np.maximum(best[: batch + 1 - b], ms), out=new[b:])
        best = new
    return float(best[batch])


def _fewest_busy(
    options: list[list[tuple[int, float]]], batch: int, latency_ms: float
) -> list[int]:
    """Sizes covering `batch` with every cell <= latency_ms and the fewest busy instances."""
    count = np.full(batch + 1, _NO_WAY, dtype=np.int64)
    count[0] = 0
    picks: list[npt.NDArray[np.int64]] = []  # picks[j][s]: n_j in the best cover of s
    for cells in options:
        new = count.copy()
        pick = np.zeros(batch + 1, dtype=np.int64)
        for b, ms in cells:
            if ms > latency_ms:
                continue
            cand = count[: batch + 1 - b] + 1
            better = cand < new[b:]
            new[b:][better] = cand[better]
            pick[b:][better] = b
        count = new
        picks.append(pick)
    sizes = [0] * len(options)
    left = batch
    for j in range(len(options) - 1, -1, -1):
        sizes[j] = int(picks[j][left])
        left -= sizes[j]
    if left != 0 or count[batch] >= _NO_WAY:  # pragma: no cover - step 1 proved a cover exists
        raise AssertionError(f"internal: no cover of batch {batch} at {latency_ms} ms")
    return sizes


def _canonical(threads: Sequence[int], sizes: list[int]) -> list[int]:
    """Among instances of equal thread count, give the larger counts to the earlier ones."""
    out = list(sizes)
    for t in set(threads):
        positions = [j for j, tj in enumerate(threads) if tj == t]
        ordered = sorted((sizes[j] for j in positions), reverse=True)
        for j, size in zip(positions, ordered, strict=True):
            out[j] = size
    return out
