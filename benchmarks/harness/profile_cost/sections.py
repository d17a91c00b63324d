"""The sections of benchmarks/profile_cost.py's report (Markdown), one per question: the
published profiles' grid (T = 16, B up to 1024), the grid as `packrat serve` plans, the pruning's
orders and exactness, the published profiles' violations of its assumption, interpolation, and
our own profiles of this machine (T = 2, B up to 64)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from packrat.optimizer import LatencyTable, PlanTable
from packrat.profiler.profile_file import Profile
from packrat.profiler.prune import Order, PruneConfig, Scaling, violations
from packrat.stats import SamplingPolicy

from harness.profile_cost.replay import (
    PAPER_TIMED_RUNS,
    Cells,
    PruneRow,
    Published,
    adaptive_cost,
    fixed_cost,
    median_cv,
    powers_of_two,
    prune_row,
    read_published,
)


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


def section_interpolation(paper: Path) -> list[str]:
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
        path = paper / "cloudlab-c6420-granular" / f"{model}_latency.csv"
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
