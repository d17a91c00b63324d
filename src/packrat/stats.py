"""When to stop sampling a cell, and how to summarize its samples: pure statistics shared by the
profiler, the workers that time cells (`packrat.pool.worker`), the simulator and the benchmarks.
No torch.

A cell is sampled until the 95% confidence interval of its mean latency is within
+-`rel_ci` of the mean (Student's t interval), or until a cap on runs or time is reached.

A cell may also be measured in several passes spread over a sweep (`merge_passes`): its
latency is then the median of the passes' means, so a stretch of minutes when the machine ran
slow (a noisy neighbour, a hypervisor throttling a VM) moves one pass, not the cell.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

# Two-sided 95% Student t quantiles for 1..30 degrees of freedom; beyond that the normal 1.96
# is within 2% and the table would only add noise.
_T95 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t95(dof: int) -> float:
    """Two-sided 95% Student t quantile for `dof` degrees of freedom (dof >= 1)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    return _T95[dof - 1] if dof <= len(_T95) else 1.96


@dataclass(frozen=True)
class SamplingPolicy:
    """How long to sample one cell.

    warmup_runs: runs discarded before timing (graph-mode models optimize on the first calls).
    min_runs / max_runs: bounds on timed runs (min_runs >= 2 for a cell's whole sampling; a
        pass of several, `per_pass`, may take 1).
    rel_ci: stop once the 95% CI half-width is within rel_ci * mean (0.03 = +-3%).
    max_time_s: stop after this much timed work even if the CI is still wide (min_runs still apply).
    """

    warmup_runs: int = 2
    min_runs: int = 5
    max_runs: int = 200
    rel_ci: float = 0.03
    max_time_s: float = 30.0

    def __post_init__(self) -> None:
        if self.warmup_runs < 0:
            raise ValueError(f"SamplingPolicy.warmup_runs must be >= 0, got {self.warmup_runs}")
        if not 1 <= self.min_runs <= self.max_runs:
            raise ValueError(
                "SamplingPolicy needs 1 <= min_runs <= max_runs, "
                f"got {self.min_runs}, {self.max_runs}"
            )
        if not 0 < self.rel_ci < 1:
            raise ValueError(f"SamplingPolicy.rel_ci must be in (0, 1), got {self.rel_ci}")
        if self.max_time_s <= 0:
            raise ValueError(f"SamplingPolicy.max_time_s must be > 0, got {self.max_time_s}")

    def per_pass(self, passes: int) -> SamplingPolicy:
        """This policy's budget spread over `passes` passes: each pass takes its share of the
        runs (at least one: the passes together make `min_runs` or more) and time, and a
        confidence interval sqrt(passes) wider, since the median of the passes narrows it
        again; the warm-up is run in every pass."""
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        if passes == 1:
            return self
        min_runs = math.ceil(self.min_runs / passes)
        return SamplingPolicy(
            warmup_runs=self.warmup_runs,
            min_runs=min_runs,
            max_runs=max(min_runs, math.ceil(self.max_runs / passes)),
            rel_ci=min(0.99, self.rel_ci * math.sqrt(passes)),
            max_time_s=self.max_time_s / passes,
        )


def ci_half_width(samples: list[float]) -> float:
    """Half-width of the 95% confidence interval of the mean (needs >= 2 samples)."""
    n = len(samples)
    if n < 2:
        return math.inf
    return t95(n - 1) * statistics.stdev(samples) / math.sqrt(n)


def should_stop(samples: list[float], elapsed_s: float, policy: SamplingPolicy) -> bool:
    """True once enough timed runs are in: CI tight enough, or a cap reached."""
    n = len(samples)
    if n < policy.min_runs:
        return False
    if n >= policy.max_runs or elapsed_s >= policy.max_time_s:
        return True
    mean = statistics.fmean(samples)
    return ci_half_width(samples) <= policy.rel_ci * mean


@dataclass(frozen=True)
class CellStats:
    """Summary of one cell's timed runs, in milliseconds.

    passes: for a cell measured in several passes, each pass's own summary; `mean_ms` is then
    the median of their means (`merge_passes`). Empty for a cell measured in one go.
    """

    mean_ms: float
    p50_ms: float
    p95_ms: float
    stdev_ms: float
    n: int
    passes: tuple[CellStats, ...] = ()

    @property
    def pass_count(self) -> int:
        """How many passes measured this cell (1 for a cell measured in one go)."""
        return max(1, len(self.passes))

    def with_pass(self, new: CellStats) -> CellStats:
        """This cell with one more pass, `new`, merged in."""
        return merge_passes([*(self.passes or (self,)), new])

    @property
    def ci95_ms(self) -> float:
        """Half-width of the 95% confidence interval of the mean (0 for published means)."""
        if self.n < 2:
            return 0.0
        return t95(self.n - 1) * self.stdev_ms / math.sqrt(self.n)


def summarize(samples_ms: list[float]) -> CellStats:
    """Mean, median, 95th percentile (nearest rank), stdev and count of the samples."""
    if not samples_ms:
        raise ValueError("cannot summarize an empty list of samples")
    ordered = sorted(samples_ms)
    n = len(ordered)
    p95_rank = max(1, math.ceil(0.95 * n))
    return CellStats(
        mean_ms=statistics.fmean(ordered),
        p50_ms=statistics.median(ordered),
        p95_ms=ordered[p95_rank - 1],
        stdev_ms=statistics.stdev(ordered) if n > 1 else 0.0,
        n=n,
    )


def merge_passes(passes: list[CellStats]) -> CellStats:
    """One cell measured in several passes: the median of the passes' means, medians and 95th
    percentiles; the run count and (pooled, between-pass spread included) stdev of all runs."""
    if not passes:
        raise ValueError("cannot merge an empty list of passes")
    if len(passes) == 1:
        return passes[0]
    n = sum(p.n for p in passes)
    grand = sum(p.n * p.mean_ms for p in passes) / n
    squares = sum((p.n - 1) * p.stdev_ms**2 + p.n * (p.mean_ms - grand) ** 2 for p in passes)
    flat = tuple(replace(p, passes=()) for p in passes)
    return CellStats(
        mean_ms=statistics.median(p.mean_ms for p in flat),
        p50_ms=statistics.median(p.p50_ms for p in flat),
        p95_ms=statistics.median(p.p95_ms for p in flat),
        stdev_ms=math.sqrt(squares / (n - 1)) if n > 1 else 0.0,
        n=n,
        passes=flat,
    )
