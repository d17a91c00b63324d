"""Exact planning on a table of every batch size 1..N (the interpolated profile the server and
the simulator plan on), fast enough for T = 128 and B = 1024.

The table is non-decreasing in the batch on each thread count (`LatencyTable.monotone_in_batch`),
so within a latency lam an instance of t threads can take any number of requests from 1 up to
cap_t(lam) = #{k : L(t, k) <= lam}, and a plan within c cores serves b requests within lam iff
the most requests instances within c cores can take, K_lam(c) = max over thread counts of
cap_t(lam) + K_lam(c - t), is at least b.

Write G_c for the optimal latencies of every batch on c cores, G_c[k] = the smallest lam with
K_lam(c) >= k: a non-decreasing sequence with K_lam(c) = #{k : G_c[k] <= lam}. Counting the
entries <= lam of two sorted sequences is counting them in their merge, and "either plan
serves k" is the smaller k-th entry, so the recurrence over capacities becomes one over
sequences, with no latency threshold in it:

    G_c = elementwise min( G_{c-1},  min over t <= c of merge(L(t, 1..B), G_{c-t})[:B] )

Each merge is a sort of two sorted runs (a linear merge), so the whole table costs
O(T * threads * B): about 0.2 s for T = 128, every t, B = 1024 (`benchmarks/optimizer_speed.py`),
against O(T B^3) for the level sweep that grids use (`packrat.optimizer.levels`).

The plan for (c, b) is rebuilt at lam = G_c[b]: the thread counts are chosen by a DP over the
number of instances (the fewest whose capacities reach b within c cores, then the fewest cores),
and b is shared out in proportion to their capacities, none above its own.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from packrat.errors import PlanError
from packrat.types import InstanceSpec

_NONE = np.int64(-(1 << 40))  # "no way": below any capacity sum


class MergeSolver:
    """Optimal latency for every (c <= max_cores, b <= max_batch), and the instances of one
    optimum on request, for a table whose pieces are every batch size 1..N.

    `lat` is (threads, N) in ms, each row non-decreasing up to its last finite cell and NaN
    after it; `threads` is increasing.
    """

    def __init__(
        self,
        lat: npt.NDArray[np.float64],
        threads: npt.NDArray[np.int64],
        max_cores: int,
        max_batch: int,
    ) -> None:
        width = min(lat.shape[1], max_batch)
        rows = np.full((threads.size, max_batch), np.inf)
        rows[:, :width] = np.where(np.isfinite(lat[:, :width]), lat[:, :width], np.inf)
        self._rows = rows  # L(t, k) for k = 1..max_batch, inf where no cell
        self._threads = threads
        best = np.full((max_cores + 1, max_batch), np.inf)  # best[c, k - 1] = G_c[k]
        for c in range(1, max_cores + 1):
            usable = int(np.searchsorted(threads, c, side="right"))
            best[c] = best[c - 1]
            if usable:
                runs = np.concatenate((rows[:usable], best[c - threads[:usable]]), axis=1)
                merged = np.sort(runs, axis=1, kind="stable")[:, :max_batch]
                np.minimum(best[c], merged.min(axis=0), out=best[c])
        self.latency_table_ms: npt.NDArray[np.float64] = np.hstack(
            (np.zeros((max_cores + 1, 1)), best)
        )

    def instances(self, cores: int, batch: int) -> tuple[float, list[InstanceSpec]]:
        """The optimal latency for (cores, batch) and the instances of a plan reaching it with
        the fewest instances, then the fewest cores; PlanError if no plan exists."""
        latency = float(self.latency_table_ms[cores, batch])
        if not np.isfinite(latency):
            raise PlanError(
                f"no plan covers batch {batch} within {cores} cores with the profiled cells "
                f"(threads {list(map(int, self._threads))}, batch sizes up to "
                f"{int(np.isfinite(self._rows).sum(axis=1).max())})"
            )
        caps = (self._rows <= latency).sum(axis=1)  # rows are non-decreasing
        usable = (caps > 0) & (self._threads <= cores)
        threads = _fewest_instances(self._threads[usable], caps[usable], cores, batch)
        row_of = {int(t): i for i, t in enumerate(self._threads)}
        sizes = _share(batch, [int(caps[row_of[t]]) for t in threads])
        return latency, [
            InstanceSpec(threads=t, batch=b) for t, b in zip(threads, sizes, strict=True)
        ]


def _fewest_instances(
    threads: npt.NDArray[np.int64], caps: npt.NDArray[np.int64], cores: int, batch: int
) -> list[int]:
    """Thread counts of the fewest instances whose capacities sum to >= batch within `cores`,
    and of those the fewest cores.

    most[c'] is the largest capacity n instances reach with at most c' cores; it grows with n
    until it reaches `batch` at `cores`; the fewest cores are then the first c' that reaches
    it, and the back-pointers of each n give the thread counts.
    """
    budget = np.arange(cores + 1)
    left = budget[None, :] - threads[:, None]  # cores left after one instance of each kind
    fits = left >= 0
    left = np.maximum(left, 0)
    gain = np.where(fits, caps[:, None], _NONE)  # what one more instance of each kind adds
    most = np.zeros(cores + 1, dtype=np.int64)  # no instance: capacity 0 on any budget
    picks: list[npt.NDArray[np.int64]] = []
    for _ in range(min(batch, cores)):
        cand = gain + most[left]
        pick = cand.argmax(axis=0)  # the fewest threads among ties: threads ascend
        most = np.maximum(cand[pick, budget], _NONE)
        picks.append(pick)
        if most[cores] >= batch:
            break
    else:  # pragma: no cover - the latency table guarantees a plan at this latency
        raise PlanError(f"internal: no plan at the optimal latency for {cores} cores, {batch}")
    used = int(np.argmax(most >= batch))
    chosen: list[int] = []
    for pick in reversed(picks):
        t = int(threads[pick[used]])
        chosen.append(t)
        used -= t
    return chosen


def _share(batch: int, caps: list[int]) -> list[int]:
    """`batch` requests shared out over instances of these capacities (each gets 1..cap, the
    sum is `batch`), in proportion to the capacities, largest remainders first."""
    total = sum(caps)
    exact = [batch * cap / total for cap in caps]
    sizes = [min(cap, max(1, int(share))) for cap, share in zip(caps, exact, strict=True)]
    by_remainder = sorted(range(len(caps)), key=lambda i: sizes[i] - exact[i])
    while sum(sizes) < batch:
        for i in by_remainder:
            if sizes[i] < caps[i] and sum(sizes) < batch:
                sizes[i] += 1
    while sum(sizes) > batch:  # only when rounding up to 1 overshot
        i = max(range(len(sizes)), key=lambda j: sizes[j])
        sizes[i] -= 1
    return sizes
