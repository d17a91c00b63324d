"""The replay of benchmarks/profile_cost.py: the published and measured profiles it reads,
adaptive sampling simulated on each cell (timed runs and time), and a pruned sweep replayed
against a full table (cells measured, plans changed)."""

from __future__ import annotations

import csv
import glob
import math
import statistics
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packrat.optimizer import LatencyTable, PlanTable
from packrat.profiler.profile_file import Profile, load_profile
from packrat.profiler.prune import PruneConfig, SweepReplay, replay_sweep
from packrat.stats import SamplingPolicy, should_stop

PAPER_WARMUP_RUNS, PAPER_TIMED_RUNS = 10, 100
RANGE_TO_SIGMA = 5.0  # E[max - min] of 100 normal samples, in standard deviations
DRAWS = 10  # sampling simulations per cell, averaged


Cells = dict[tuple[int, int], float]


def powers_of_two(max_batch: int) -> tuple[int, ...]:
    return tuple(2**k for k in range(max_batch.bit_length()) if 2**k <= max_batch)


@dataclass(frozen=True)
class Published:
    """One published single-instance profile: means and per-cell CV from the range."""

    name: str
    mean_ms: Cells
    range_cv: Cells


def read_published(path: Path, batches: Sequence[int]) -> Published:
    """TorchScript, sequential-topology rows, as `read_published_csv` keeps them."""
    mean, cv = {}, {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if not row["benchmark"].endswith("_manual_script") or row["topology"] != "sequential":
                continue
            key = (int(row["intraop_threads"]), int(row["batch_size"]))
            if key[1] not in batches:
                continue
            avg = float(row["latency(avg)"])
            mean[key] = avg
            cv[key] = (float(row["latency(max)"]) - float(row["latency(min)"])) / avg
            cv[key] /= RANGE_TO_SIGMA
    return Published(path.stem.removesuffix("_latency"), mean, cv)


def measured_profiles(patterns: Sequence[str]) -> dict[str, Profile]:
    """Our own JSON profiles by model name (the newest file wins)."""
    found: dict[str, Profile] = {}
    paths = {p for pattern in patterns for p in glob.glob(pattern)}
    for path in sorted(paths, key=lambda p: Path(p).stat().st_mtime):
        profile = load_profile(path)
        found[profile.model_name] = profile
    return found


def median_cv(profile: Profile) -> float:
    return statistics.median(s.stdev_ms / s.mean_ms for s in profile.cells.values() if s.n > 1)


@dataclass(frozen=True)
class Cost:
    cells: int
    timed_runs: float
    time_s: float


def adaptive_cost(
    mean_ms: Mapping[tuple[int, int], float],
    cv: Mapping[tuple[int, int], float],
    policy: SamplingPolicy,
    seed: str,
) -> Cost:
    """Simulated runs and seconds to sample every cell of `mean_ms` until `should_stop`."""
    runs = total_ms = 0.0
    for (t, b), ms in sorted(mean_ms.items()):
        sigma = math.sqrt(math.log1p(cv[(t, b)] ** 2))
        mu = math.log(ms) - sigma**2 / 2
        rng = np.random.default_rng([zlib.crc32(seed.encode()), t, b])
        for _ in range(DRAWS):
            samples: list[float] = []
            while not should_stop(samples, sum(samples) / 1000, policy):
                samples.append(float(rng.lognormal(mu, sigma)))
            runs += len(samples) / DRAWS
            total_ms += (sum(samples) + policy.warmup_runs * ms) / DRAWS
    return Cost(len(mean_ms), runs, total_ms / 1000)


def fixed_cost(mean_ms: Mapping[tuple[int, int], float]) -> Cost:
    """The paper's way: a fixed number of warm-up and timed runs per cell."""
    per_cell = PAPER_WARMUP_RUNS + PAPER_TIMED_RUNS
    return Cost(
        len(mean_ms),
        float(PAPER_TIMED_RUNS * len(mean_ms)),
        per_cell * sum(mean_ms.values()) / 1000,
    )


def optimal_latencies(cells: Cells, config: PruneConfig) -> list[float]:
    """The optimal latency for each asked B, planned as the profile's consumer plans."""
    table = LatencyTable.from_cells(cells)
    if config.interpolate:
        table = table.interpolated()
    solver = PlanTable(table, config.cores, max(config.asked))
    return [solver.latency_ms(config.cores, b) for b in config.asked]


def changed_plans(full: Cells, replay: SweepReplay, config: PruneConfig) -> tuple[int, float]:
    """Asked batch sizes whose optimal latency differs between the pruned and full profile,
    and the largest ratio pruned / full of those latencies (1.0 when none differs)."""
    before, after = optimal_latencies(full, config), optimal_latencies(replay.measured, config)
    ratios = [a / b for a, b in zip(after, before, strict=True) if a != b]
    return len(ratios), max(ratios, default=1.0)


@dataclass(frozen=True)
class PruneRow:
    label: str
    cells: int
    time_share: float  # of the full sweep's latency sum
    changed: int
    asked: int
    replay: SweepReplay
    loss: float  # the largest optimal latency pruned / full over the asked B


def prune_row(label: str, full: Cells, config: PruneConfig) -> PruneRow:
    replay = replay_sweep(config, full)
    share = sum(full[c] for c in replay.measured) / sum(full.values())
    changed, loss = changed_plans(full, replay, config)
    return PruneRow(label, len(replay.measured), share, changed, len(config.asked), replay, loss)
