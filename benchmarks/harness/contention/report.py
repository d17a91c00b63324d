"""What benchmarks/contention.py keeps per plan measured (`Row`, with both profiles'
predictions) and its report (Markdown): each profile's errors against the measured latencies,
of the medians and paired by round."""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packrat.optimizer.table import LatencyTable
from packrat.profiler.profile_file import load_profile
from packrat.types import Plan, parse_plan

KINDS = ("isolated", "contention")
TARGET = 0.05  # contention-aware predictions within 5% of measured


@dataclass(frozen=True)
class Row:
    """One plan measured at one batch size, with both profiles' predictions."""

    model: str
    batch: int
    plan: str
    roles: list[str]  # isolated / contention (the profile chose it), fat, single
    measured_ms: float  # the median of the rounds' means
    rounds_ms: list[float]  # each round's mean, in order
    n: int
    predicted_ms: dict[str, float]

    def error(self, kind: str) -> float:
        """Relative error of `kind`'s prediction: (predicted - measured) / measured."""
        return self.predicted_ms[kind] / self.measured_ms - 1.0


def predict(plan: Plan, table: LatencyTable) -> float:
    """The plan's latency by `table`: its slowest instance (nan if a cell is missing)."""
    cells = [table.get(i.threads, i.batch) for i in plan.instances]
    return max((math.nan if c is None else c) for c in cells)


def pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1%}"


PassTables = dict[tuple[str, str], list[LatencyTable]]
"""(model, kind) -> the interpolated table of each pass of that profile, in order."""


def pass_tables(models: list[str], workdir: Path) -> PassTables:
    """Each pass of every profile in the work directory, as its own table."""
    tables: PassTables = {}
    for model in models:
        for kind in KINDS:
            path = workdir / f"{model}-{kind}.json"
            if not path.exists():
                continue
            cells = load_profile(path).cells
            passes = max(s.pass_count for s in cells.values())
            tables[model, kind] = [
                LatencyTable.from_cells(
                    {k: (s.passes or (s,))[r].mean_ms for k, s in cells.items() if s.pass_count > r}
                ).interpolated()
                for r in range(passes)
            ]
    return tables


def paired_error(row: Row, kind: str, tables: PassTables) -> float:
    """The median over rounds of the error of round r's measurement against the profile's
    pass r, measured minutes before it (a plan measured in fewer rounds than the profile has
    passes was first chosen in a later round: its rounds are the last ones); nan without the
    passes."""
    passes = tables.get((row.model, kind), [])
    n = len(row.rounds_ms)
    if len(passes) < n:
        return math.nan
    plan = parse_plan(row.plan)
    errors = [
        predict(plan, table) / ms - 1.0
        for table, ms in zip(passes[len(passes) - n :], row.rounds_ms, strict=True)
    ]
    return statistics.median(errors)


def error_summary(errors_of: list[float]) -> str:
    """Mean and largest absolute error, and how many are within the target."""
    errors = [abs(e) for e in errors_of if not math.isnan(e)]
    if not errors:
        return "- | - | -"
    within = sum(e <= TARGET for e in errors)
    return f"{sum(errors) / len(errors):.1%} | {max(errors):.1%} | {within} of {len(errors)}"


def summary_rows(rows: list[Row], models: list[str], tables: PassTables) -> list[str]:
    """Per model (and all), profile kind and set of plans: the errors of the medians, and the
    errors paired by round."""
    lines = []
    for model in [*models, "all"]:
        mine = rows if model == "all" else [r for r in rows if r.model == model]
        for kind in KINDS:
            for chosen_only, label in ((True, "it chose"), (False, "every plan measured")):
                picked = [r for r in mine if kind in r.roles] if chosen_only else mine
                medians = error_summary([r.error(kind) for r in picked])
                paired = error_summary([paired_error(r, kind, tables) for r in picked])
                lines.append(f"| {model} | {kind} | {label} | {medians} | {paired} |")
    return lines


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    when = results["when"]
    lines = [
        "# Contention-aware profiles: predicted against measured plan latency (issue 7)",
        "",
        f"Measured {when} on {results['cpu']}, {results['cores']} usable cores; "
        f"{results['versions']}.",
        "",
        f"Command: `{results['command']}`",
        "",
        "Two profiles per model, t = 1..T and b = 1, 2, 4, ...: **isolated** (each cell "
        "alone) and **contention** (each cell <t, b> beside T // t - 1 copies of itself, all "
        "timed: `packrat profile --contention`). For each batch size B the plan each "
        "profile's optimizer picks, the fat instance and T single-thread instances were "
        "measured end to end as `packrat bench` does (one batch of B split over the pinned "
        "instances, run at once, gathered), and predicted by both profiles (the slowest "
        "instance's cell). Error = predicted / measured - 1.",
        "",
        f"The work ran in {results['rounds']} interleaved rounds: each round added one pass "
        "of both profiles (`packrat profile --passes "
        f"{results['rounds']}`'s sampling: each pass its share of the default budget, 95% CI "
        "within +-3% in all) and then measured every plan once (its share of `packrat "
        "bench`'s budget). A profile cell is the median of its passes and a measured plan "
        "the median of its rounds, so the predictions and the measurements span the same "
        "minutes; the rounds' own means are listed to show how far the machine drifted.",
        "",
    ]
    rows = [Row(**r) for r in results["rows"]]
    for model in results["models"]:
        mine = [r for r in rows if r.model == model]
        times = results["profile_times_s"]
        lines += [
            f"## {model}",
            "",
            f"Profiling time: isolated {times[f'{model}-isolated']:.0f} s, contention "
            f"{times[f'{model}-contention']:.0f} s.",
            "",
            "| B | plan | chosen by | measured ms | rounds, ms | isolated predicts | error "
            "| contention predicts | error |",
            "| ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in mine:
            rounds = ", ".join(f"{ms:.1f}" for ms in r.rounds_ms)
            lines.append(
                f"| {r.batch} | {r.plan} | {', '.join(r.roles)} | {r.measured_ms:.1f} "
                f"| {rounds} | {r.predicted_ms['isolated']:.1f} | "
                f"{pct(r.error('isolated'))} | {r.predicted_ms['contention']:.1f} | "
                f"{pct(r.error('contention'))} |"
            )
        lines += [""]
    lines += [
        "## Summary: absolute error of each profile's predictions",
        "",
        "Medians: each profile cell the median of its passes against each plan the median "
        "of its rounds (the tables above). Paired by round: round r's measurement of a plan "
        "against the profile's pass r, measured minutes before it, then the median of the "
        "rounds' errors: what is left when the drift between rounds is taken out.",
        "",
        f"| model | profile | plans | medians: mean error | largest | within {TARGET:.0%} "
        f"| paired by round: mean error | largest | within {TARGET:.0%} |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *summary_rows(rows, results["models"], pass_tables(results["models"], args.workdir)),
    ]
    lines += [""]
    return "\n".join(lines)
