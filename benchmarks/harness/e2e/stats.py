"""The end-to-end suite's numbers (benchmarks/e2e.py): per-round values, their median and 95%
confidence interval over rounds, and speedups paired by round.

Every statistic (a phase's p50, a mean burst latency) is computed per round, and summarized
over the rounds as an `Estimate` (harness/stats.py: the median, the 95% confidence interval of
the geometric mean, and the rounds' own values).

A speedup of auto over another system is paired: the other system's value over auto's in the
same round (same arrival times, the same minutes of the machine), then summarized as above.
Above 1, Packrat (auto) is faster.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from packrat.bench.offline import Measurement
from packrat.bench.report import BatchSummary, summarize_batches
from packrat.stats import CellStats

from harness.e2e.plans import PhasePlans
from harness.e2e.runs import SystemRun, burst_latencies_ms
from harness.e2e.session import ModelSession
from harness.stats import Estimate

Value = Callable[[SystemRun], float]
"""One number from one run (one system in one round); nan if it has none."""

PlansOf = Callable[[SystemRun], PhasePlans | None]
"""The plans one run ran in one phase (None: TorchServe, or no such phase)."""


class ModelRuns:
    """Every run of one model, by system and round (rounds numbered from 1)."""

    def __init__(self, runs: Sequence[SystemRun], rounds: int) -> None:
        self.rounds = rounds
        self._runs = {(run.system, run.round): run for run in runs}

    def of(self, key: str) -> list[SystemRun | None]:
        """System `key`'s run in each round, in round order (None: no run)."""
        return [self._runs.get((key, number)) for number in range(1, self.rounds + 1)]

    def runs(self) -> list[SystemRun]:
        return list(self._runs.values())

    def values(self, key: str, value: Value) -> list[float]:
        return [math.nan if run is None else value(run) for run in self.of(key)]

    def estimate(self, key: str, value: Value) -> Estimate:
        return Estimate.of(self.values(key, value))

    def speedup(self, key: str, value: Value, versus: str = "auto") -> Estimate:
        """`key`'s value over `versus`'s, paired by round."""
        theirs, ours = self.values(key, value), self.values(versus, value)
        return Estimate.of([ratio(t, o) for t, o in zip(theirs, ours, strict=True)])

    def mean_speedup(self, key: str, values: Sequence[Value], versus: str = "auto") -> Estimate:
        """Per round, the geometric mean over `values` (one per burst size, say) of `key`'s
        value over `versus`'s in that round; summarized over the rounds."""
        per_value = [self.speedup(key, value, versus).values for value in values]
        per_round = [geometric_mean(column) for column in zip(*per_value, strict=True)]
        return Estimate.of(per_round)

    def phase_plans(self, key: str, plans: PlansOf) -> list[PhasePlans | None]:
        """The plans system `key` ran in one phase, each round (None: TorchServe, no run)."""
        return [None if run is None else plans(run) for run in self.of(key)]


# --- one run's numbers ------------------------------------------------------------------------


def burst_ms(n: int) -> Value:
    """Mean latency of a burst of `n`: from its send to its last answer."""

    def value(run: SystemRun) -> float:
        result = run.bursts.get(n)
        latencies = [] if result is None else burst_latencies_ms(result)
        return statistics.fmean(latencies) if latencies else math.nan

    return value


def bursts_counted(n: int) -> Value:
    """Bursts of `n` measured without a failure."""

    def value(run: SystemRun) -> float:
        result = run.bursts.get(n)
        return math.nan if result is None else float(len(burst_latencies_ms(result)))

    return value


def rate_stat(rate: float, stat: str) -> Value:
    """p50_ms, p90_ms, p99_ms of the answered requests at `rate`; "offered_rps" (requests
    sent / the phase's seconds), "throughput_rps" (answers / the phase's seconds), "sent",
    "failed"."""

    def value(run: SystemRun) -> float:
        result = run.rates.get(rate)
        if result is None:
            return math.nan
        summary = result.summary().overall
        if stat == "offered_rps":
            return summary.sent / summary.duration_s if summary.duration_s > 0 else math.nan
        if stat in ("throughput_rps", "sent", "failed"):
            return float(getattr(summary, stat))
        return math.nan if summary.latency is None else float(getattr(summary.latency, stat))

    return value


def burst_plans(n: int) -> PlansOf:
    return lambda run: run.burst_plans.get(n)


def rate_plans(rate: float) -> PlansOf:
    return lambda run: run.rate_plans.get(rate)


def ratio(theirs: float, ours: float) -> float:
    return theirs / ours if ours > 0 and math.isfinite(theirs) and math.isfinite(ours) else math.nan


def geometric_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in finite)) if finite else math.nan


# --- the microbenchmark -----------------------------------------------------------------------


def micro_summaries(workdir: Path, model: ModelSession) -> list[BatchSummary]:
    """Per batch size, Packrat's plan against the fat instance, from the microbenchmark."""
    path = workdir / model.micro_file
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    found = []
    for raw in saved["measurements"]:
        fields = {**raw, "roles": tuple(raw["roles"]), "stats": CellStats(**raw["stats"])}
        found.append(Measurement(**fields))
    return summarize_batches(found) if found else []


def gap(summary: BatchSummary) -> float:
    """Measured speedup over predicted, minus 1 (-0.05: 5% less speedup than predicted)."""
    predicted = summary.predicted_speedup
    return math.nan if not predicted else summary.speedup_over_fat / predicted - 1.0
