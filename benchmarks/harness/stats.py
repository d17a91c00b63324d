"""A statistic over the rounds of a benchmark: each round's value, their median and the 95%
confidence interval of their geometric mean.

Rounds are the replicates. The requests of one phase in one round are not independent samples
of a system's latency: they share the machine's speed in those seconds (it drifts by 10-30%
within minutes), the server's state and one draw of arrival times; a bootstrap over pooled
requests would take a phase's luck for precision. So every statistic (a phase's p50, a mean
burst latency) is computed per round, and summarized over the rounds by `Estimate.of`:

- the median of the per-round values;
- a 95% confidence interval: Student's t interval on the logarithms of the per-round values
  (that of their geometric mean; t = 4.30 with 3 rounds, so intervals are wide), exponentiated
  back, which keeps latencies and ratios positive and treats 0.5x and 2x alike;
- the per-round values themselves.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packrat.stats import t95

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Estimate:
    """A statistic over rounds: each round's value in round order (nan where the round has
    none), their median, and the 95% CI of their geometric mean (nan with fewer than 2)."""

    values: tuple[float, ...]
    median: float
    low: float
    high: float

    @staticmethod
    def of(values: Sequence[float]) -> Estimate:
        finite = [v for v in values if math.isfinite(v) and v > 0]
        if not finite:
            return Estimate(tuple(values), math.nan, math.nan, math.nan)
        median = statistics.median(finite)
        if len(finite) < 2:
            return Estimate(tuple(values), median, math.nan, math.nan)
        logs = [math.log(v) for v in finite]
        half = t95(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        centre = statistics.fmean(logs)
        return Estimate(tuple(values), median, math.exp(centre - half), math.exp(centre + half))

    @property
    def count(self) -> int:
        """Rounds with a value."""
        return sum(math.isfinite(v) for v in self.values)
