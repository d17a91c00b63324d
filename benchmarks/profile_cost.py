"""What profiling costs with pruning, adaptive sampling and interpolation: a replay, no model runs.

    python benchmarks/profile_cost.py [--measured GLOB ...] [--output docs/profile-cost.md]

(a) T = 16, B up to 1024 (powers of two), on the paper's published CloudLab c6420 profiles:
replays a pruned sweep (`packrat.profiler.prune`) against each published table and counts the
cells it measures against the paper's 176; checks that the optimal plans from the pruned
profile equal those from the full one; simulates adaptive sampling
(`packrat.stats.should_stop`, default SamplingPolicy) on each measured cell to count
timed runs; estimates profiling time as the sum of simulated run latencies plus warm-up runs,
against the paper's way (10 warm-up and 100 timed runs per cell: the defaults of the authors'
harness, msr-fiddle/packrat run.py and benchmarks/*.py; the published CSVs do not record it).
Also: how often the profiles break the pruning's assumption, what that can cost (the
`Violations.loss_bound`) against what it did cost, and what interpolating between
powers of two costs in plan quality against the granular profiles (every b in 1..32).

(b) T = 2, B up to 64, the same replay on our own measured profiles of this machine (JSON
profiles found by --measured; by default the e2e suite's cache and ~/.cache/packrat).

Published profiles carry min/avg/max but no spread, so each cell's coefficient of variation
(CV) is estimated two ways: from the cell's range, (max - min) / avg / 5.0 (the expected
range of 100 normal samples is 5.0 sigma; outliers make this an overestimate), and from our
own measured profiles of the same model (median stdev/mean over their cells). Samples are
drawn log-normal with the cell's mean and CV, seeded, averaged over several draws.

Writes Markdown (the hand-written analysis after the marker line of an existing file is kept).
"""

from __future__ import annotations

import argparse
import csv
import glob
import math
import statistics
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packrat.optimizer import LatencyTable, PlanTable
from packrat.profiler.profile_file import Profile, load_profile
from packrat.profiler.prune import (
    Order,
    PruneConfig,
    Scaling,
    SweepReplay,
    replay_sweep,
    violations,
)
from packrat.stats import SamplingPolicy, should_stop

from harness.report import ANALYSIS_MARKER, kept_analysis

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT.parent / "shared" / "paper-profiles"
MODELS = ("resnet50", "inception_v3", "gpt2", "bert")
MEASURED_DEFAULT = (
    "/tmp/e2e-clean/cache/profiles/*.json",
    str(Path.home() / ".cache" / "packrat" / "profiles" / "*.json"),
)
PAPER_WARMUP_RUNS, PAPER_TIMED_RUNS = 10, 100
RANGE_TO_SIGMA = 5.0  # E[max - min] of 100 normal samples, in standard deviations
DRAWS = 10  # sampling simulations per cell, averaged

Cells = dict[tuple[int, int], float]


def powers_of_two(max_batch: int) -> tuple[int, ...]:
    return tuple(2**k for k in range(max_batch.bit_length()) if 2**k <= max_batch)


# --- inputs -------------------------------------------------------------------------------------


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


# --- the sampling simulation --------------------------------------------------------------------


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


# --- pruning ------------------------------------------------------------------------------------


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


# --- report sections ----------------------------------------------------------------------------


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def section_big(
    published: Sequence[Published], measured: Mapping[str, Profile], policy: SamplingPolicy
) -> list[str]:
    grid = powers_of_two(1024)
    every = tuple(range(1, 1025))
    lines = [
        "## T = 16, B up to 1024: published CloudLab c6420 profiles",
        "",
        "Cells: of the paper's 16 x 11 = 176. Pruned sweeps offer cells thread by thread "
        "(one worker per t, batch sizes ascending; `Order.THREAD_MAJOR`, the default) with "
        "`Scaling.POWERS_OF_TWO` (the default). Plans are wanted for every power of two "
        "B <= 1024 (the paper's grid) or for every B in 1..1024; *changed* counts asked B "
        "whose optimal latency from the pruned profile differs from the full one. Runs are "
        "timed runs (the paper: 100 per cell; ours: adaptive, `SamplingPolicy()` defaults, "
        "plus 2 warm-up runs in the time). Time is the sum of run latencies: model loads and "
        "process starts are left out of both.",
        "",
        "| model | sweep | cells | changed | runs (CV: range) | time (CV: range) | "
        "runs (CV: ours) | time (CV: ours) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pub in published:
        full = pub.mean_ms
        ours = measured.get({"bert": "bert-base"}.get(pub.name, pub.name))
        our_cv = (
            median_cv(ours) if ours else statistics.median(median_cv(p) for p in measured.values())
        )
        flat_cv = dict.fromkeys(full, our_cv)
        paper = fixed_cost(full)
        lines.append(
            f"| {pub.name} | paper: every cell, {PAPER_TIMED_RUNS} runs | {paper.cells} | - | "
            f"{paper.timed_runs:,.0f} | {hours(paper.time_s)} | {paper.timed_runs:,.0f} | "
            f"{hours(paper.time_s)} |"
        )
        sweeps: list[tuple[str, PruneRow | None, Cells]] = [("adaptive, every cell", None, full)]
        for label, asked in (
            ("adaptive + pruned, plans for 2^k", grid),
            ("adaptive + pruned, plans for every B", every),
        ):
            config = PruneConfig(16, grid, asked, order=Order.THREAD_MAJOR)
            pruned = prune_row(label, full, config)
            sweeps.append((label, pruned, pruned.replay.measured))
        for label, row, cells in sweeps:
            by_range = adaptive_cost(cells, pub.range_cv, policy, pub.name)
            by_ours = adaptive_cost(cells, flat_cv, policy, pub.name)
            changed = f"{row.changed} of {row.asked}" if row else "-"
            lines.append(
                f"| {pub.name} | {label} | {len(cells)} | {changed} | "
                f"{by_range.timed_runs:,.0f} | {hours(by_range.time_s)} | "
                f"{by_ours.timed_runs:,.0f} | {hours(by_ours.time_s)} |"
            )
        cv_note = f"{our_cv:.3f} ({ours.model_name})" if ours else f"{our_cv:.3f} (pooled)"
        lines.append(
            f"| {pub.name} | CV used | | | range: median "
            f"{statistics.median(pub.range_cv.values()):.3f} | | ours: {cv_note} | |"
        )
    return lines + [""]


def section_serve(published: Sequence[Published], policy: SamplingPolicy) -> list[str]:
    grid = powers_of_two(128)
    lines = [
        "## As `packrat serve` plans: interpolated profile, every B <= 128 (T = 16)",
        "",
        "The server plans every batch size on the profile interpolated between powers of two "
        "(`interpolate=True`, asked B = 1..128; 16 x 8 = 128 cells). Interpolated planning "
        "gets slow beyond this (one optimizer table for 16 x 256 takes 0.4 s here, and the "
        "pruning builds two per measured cell), so B <= 1024 is not replayed this way.",
        "",
        "| model | cells | share of sweep time | changed | runs (CV: range) | "
        "time (CV: range) | every cell, adaptive: time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pub in published:
        full = {k: v for k, v in pub.mean_ms.items() if k[1] in grid}
        config = PruneConfig(16, grid, tuple(range(1, 129)), interpolate=True)
        row = prune_row("", full, config)
        pruned = adaptive_cost(row.replay.measured, pub.range_cv, policy, pub.name)
        every = adaptive_cost(full, pub.range_cv, policy, pub.name)
        lines.append(
            f"| {pub.name} | {row.cells} of {len(full)} | {row.time_share:.0%} | "
            f"{row.changed} of {row.asked} | {pruned.timed_runs:,.0f} | "
            f"{hours(pruned.time_s)} | {hours(every.time_s)} |"
        )
    return lines + [""]


def section_orders(published: Sequence[Published]) -> list[str]:
    grid = powers_of_two(1024)
    every = tuple(range(1, 1025))
    lines = [
        "## Pruning: orders, assumptions and exactness (T = 16, B <= 1024)",
        "",
        "Cells measured, the share of the full sweep's latency sum they take, and asked B "
        "whose optimal latency changed. `pow2`: speed-up bounded from t' in 1, 2, 4, 8 "
        "(default); `any`: from every t' < t; `one`: from t' = 1 only.",
        "",
        "| model | order | scaling | plans for | cells | share of sweep time | changed |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for pub in published:
        for order in Order:
            for scaling in Scaling:
                for label, asked in (("2^k", grid), ("every B", every)):
                    config = PruneConfig(16, grid, asked, order=order, scaling=scaling)
                    row = prune_row(label, pub.mean_ms, config)
                    lines.append(
                        f"| {pub.name} | {order.value} | {scaling.value} | {label} | "
                        f"{row.cells} | {row.time_share:.0%} | {row.changed} of {row.asked} |"
                    )
    return lines + [""]


def section_violations(paths: Sequence[Path]) -> list[str]:
    lines = [
        "## Assumption violations in the published profiles",
        "",
        "Pairs breaking L(t, b) >= L(t, b') for b' < b (batch dips: they cost pruning nothing, "
        "as the optimizer plans on each row's running maximum and skips take row suffixes) and "
        "t L(t, b) >= t' L(t', b) for t' < t (super-linear speed-ups), the latter from the "
        "source thread counts of each scaling; worst = min t L(t, b) / (t' L(t', b')) over "
        "sources t' < t and b' <= b (>= 1 when the assumption holds). *Bound*: "
        "`Violations.loss_bound`, the most the optimal latency from a pruned profile can "
        "exceed the full one's by, max(1, 1 / worst); *loss*: the largest it did, and "
        "*changed*: asked B whose optimal latency differs, summed over both orders and both "
        "sets of asked B (2 x (11 + 1024) = 2070). Powers-of-two batch sizes only, all "
        "thread counts (16 or 18).",
        "",
        "| profile | batch dips | speed-ups (pow2) | worst (pow2) | bound (pow2) | "
        "changed (pow2) | speed-ups (any) | worst (any) | bound (any) | loss (any) | "
        "changed (any) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in paths:
        cells = read_published(path, powers_of_two(1024)).mean_ms
        cores = max(t for t, _ in cells)
        table = LatencyTable.from_cells(cells).latency_ms
        found = {}
        for scaling in (Scaling.POWERS_OF_TWO, Scaling.ANY):
            changed, loss = 0, 1.0
            for order in Order:
                for asked in (powers_of_two(1024), tuple(range(1, 1025))):
                    grid = powers_of_two(1024)
                    config = PruneConfig(cores, grid, asked, order=order, scaling=scaling)
                    row = prune_row("", cells, config)
                    changed, loss = changed + row.changed, max(loss, row.loss)
            found[scaling] = (violations(table, scaling), changed, loss)
        (pow2, pow2_changed, pow2_loss), (anyt, any_changed, any_loss) = found.values()
        if pow2_loss > pow2.loss_bound or any_loss > anyt.loss_bound:  # a proven bound broke
            raise RuntimeError(f"{path}: pruning lost more than Violations.loss_bound")
        lines.append(
            f"| {path.parent.name}/{path.name} | {pow2.batch_pairs} of "
            f"{pow2.batch_pairs_checked} | {pow2.thread_pairs} of {pow2.thread_pairs_checked} "
            f"| {pow2.worst_ratio:.2f} | {pow2.loss_bound:.2f} | {pow2_changed} | "
            f"{anyt.thread_pairs} of {anyt.thread_pairs_checked} | {anyt.worst_ratio:.2f} | "
            f"{anyt.loss_bound:.2f} | {any_loss:.2f} | {any_changed} |"
        )
    return lines + [""]


def section_interpolation() -> list[str]:
    lines = [
        "## Interpolation: powers of two instead of every batch size (T = 16, B <= 32)",
        "",
        "The granular profiles measure every b in 1..32. Profiling only 1, 2, 4, ..., 32 and "
        "interpolating (`LatencyTable.interpolated`) needs 6 of 32 batch sizes per thread "
        "count (96 of 512 cells). Regret: the plan chosen on the interpolated profile, timed "
        "on the granular one, against the granular optimum, over B = 1..32.",
        "",
        "| model | cells | B with another latency | mean regret | worst regret (B) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for model in ("resnet50", "inception_v3", "gpt2"):
        path = PAPER / "cloudlab-c6420-granular" / f"{model}_latency.csv"
        if not path.exists():
            continue
        truth = read_published(path, range(1, 33)).mean_ms
        grid = powers_of_two(32)
        coarse = {k: v for k, v in truth.items() if k[1] in grid}
        exact = PlanTable(LatencyTable.from_cells(truth), 16, 32)
        interp = PlanTable(LatencyTable.from_cells(coarse).interpolated(), 16, 32)
        regrets = []
        for batch in range(1, 33):
            plan = interp.plan(16, batch)
            real = max(truth[(i.threads, i.batch)] for i in plan.instances)
            regrets.append((real / exact.latency_ms(16, batch) - 1, batch))
        worst = max(regrets)
        differ = sum(r > 1e-12 for r, _ in regrets)
        lines.append(
            f"| {model} | {len(coarse)} of {len(truth)} | {differ} of 32 | "
            f"{statistics.fmean(r for r, _ in regrets):.1%} | {worst[0]:.1%} ({worst[1]}) |"
        )
    return lines + [""]


def section_small(measured: Mapping[str, Profile], policy: SamplingPolicy) -> list[str]:
    grid = powers_of_two(64)
    lines = [
        "## T = 2, B up to 64: our measured profiles of this machine",
        "",
        "14 cells (t = 1, 2 x b = 1..64). *interpolating, every B*: what `packrat serve` "
        "needs (plans for every B on the interpolated profile); *2^k*: plans for powers of two "
        "only. CV per cell from the profile itself (stdev/mean; those profiles were measured "
        "with 3-20 runs). Time is the sum of run latencies, model loads left out.",
        "",
        "| model | sweep | cells | changed | runs | time |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, profile in sorted(measured.items()):
        full = {k: s.mean_ms for k, s in profile.cells.items() if k[0] <= 2 and k[1] in grid}
        if len(full) < 2 * len(grid):
            lines.append(f"| {name} | (profile lacks cells of t <= 2, b <= 64) | | | | |")
            continue
        cv = {k: s.stdev_ms / s.mean_ms for k, s in profile.cells.items()}
        paper = fixed_cost(full)
        lines.append(
            f"| {name} | paper: every cell, {PAPER_TIMED_RUNS} runs | {paper.cells} | - | "
            f"{paper.timed_runs:,.0f} | {hours(paper.time_s)} |"
        )
        sweeps: list[tuple[str, PruneRow | None, Cells]] = [("adaptive, every cell", None, full)]
        for label, asked, interp in (
            ("adaptive + pruned, 2^k", grid, False),
            ("adaptive + pruned, interpolating, every B", tuple(range(1, 65)), True),
        ):
            row = prune_row(label, full, PruneConfig(2, grid, asked, interpolate=interp))
            sweeps.append((label, row, row.replay.measured))
        for label, prow, cells in sweeps:
            cost = adaptive_cost(cells, cv, policy, name)
            changed = f"{prow.changed} of {prow.asked}" if prow else "-"
            lines.append(
                f"| {name} | {label} | {len(cells)} | {changed} | {cost.timed_runs:,.0f} | "
                f"{hours(cost.time_s)} |"
            )
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", nargs="*", default=list(MEASURED_DEFAULT))
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "profile-cost.md")
    args = parser.parse_args(argv)
    if not PAPER.is_dir():
        print(f"needs the published profiles in {PAPER}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    policy = SamplingPolicy()
    published = [
        read_published(PAPER / "cloudlab-c6420" / f"{m}_latency.csv", powers_of_two(1024))
        for m in MODELS
    ]
    measured = measured_profiles(args.measured)
    violation_paths = sorted(
        p for p in PAPER.glob("*/*_latency.csv") if p.parent.name != "multiinstance"
    )
    lines = [
        "# Profiling cost: pruning, adaptive sampling, interpolation",
        "",
        "Produced by `python benchmarks/profile_cost.py` (a replay against stored profiles: "
        "no model runs). Published profiles: Bhardwaj et al., ICML 2025 "
        "(`../shared/paper-profiles/`). Our profiles: "
        + (", ".join(f"`{p.model_name}`" for p in measured.values()) or "none found")
        + ".",
        "",
        *section_big(published, measured, policy),
        *section_serve(published, policy),
        *section_orders(published),
        *section_violations(violation_paths),
        *section_interpolation(),
        *section_small(measured, policy),
        f"_Replay took {time.perf_counter() - started:.0f} s._",
        "",
    ]
    report = "\n".join(lines)
    args.output.write_text(report + (kept_analysis(args.output) or f"\n{ANALYSIS_MARKER}\n"))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
