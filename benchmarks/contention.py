"""Isolated against contention-aware profiles: which one predicts a plan's latency (issue 7).

    python benchmarks/contention.py [--models resnet50,bert-base] [--max-batch 64]
        [--rounds 3] [--workdir DIR] [--output docs/contention.md] [--render-only]

(with the project's venv active; HF_HUB_OFFLINE=1 is set here).

For each model, on every usable core T of this machine, in --rounds interleaved rounds (so
that the profiles and the plan measurements span the same minutes, and a slow stretch of the
machine weighs on both alike instead of on whichever ran then):

1. One pass of each of two profiles over t = 1..T and b = 1, 2, 4, ... --max-batch, with
   `packrat profile --passes ROUNDS`'s sampling (each pass its share of the default budget):
   isolated (each cell alone) and contention (each cell <t, b> beside T // t - 1 copies of
   itself, `packrat profile --contention`). The profile files in the work directory gain a
   pass per round; each cell's latency is the median of its passes. Profiling is timed; a
   profile already holding the round's passes is not measured again.
2. For every B of the grid, the plan each profile's optimizer picks for T cores (from the
   interpolated table, as `packrat serve` plans), plus the fat instance and T single-thread
   instances (and every plan chosen in an earlier round), each measured end to end as
   `packrat bench` does (`Engine.infer` on a batch of B: split, run on the pinned instances at
   once, gather; warm-up excluded), with its share of `packrat bench`'s budget.

Then every plan of the last round's candidates is predicted by both final profiles (the
slowest instance's cell) against its measured latency, the median of its rounds' means.

Reports per model and B: the plans, the two predictions and the measurement, with the error of
each prediction; then the mean and largest error of each profile over the plans it chose, and
over every plan measured. Writes docs/contention.md (the hand-written analysis after the
`<!-- analysis: ... -->` marker line of an existing file is kept) and results.json in the work
directory, from which `--render-only` writes the report again. On 2 cores with the defaults it
takes about 30 minutes, most of it BERT at batch 32 and 64.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from packrat.bench.candidates import homogeneous
from packrat.bench.offline import BenchConfig, on_cores, time_infer
from packrat.models.base import ModelSource
from packrat.optimizer import PlanTable
from packrat.optimizer.table import LatencyTable
from packrat.pool.config import EngineConfig
from packrat.profiler.profile_file import Profile, load_profile
from packrat.profiler.sweep import powers_of_two
from packrat.stats import CellStats, merge_passes
from packrat.topology import allocate, read_topology
from packrat.types import Plan, parse_plan

from harness.report import cpu_model, kept_analysis, package_versions
from harness.rounds import profile_pass

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


def say(text: str) -> None:
    print(f"[contention] {text}", flush=True)


def profile(
    source: ModelSource, kind: str, args: argparse.Namespace, passes: int
) -> tuple[Profile, float]:
    """The model's profile of `kind` in the work directory, with `passes` passes of every cell
    (one more than before, in a run of rounds); the seconds all its measuring took (recorded,
    so a resumed profile keeps its earlier time)."""
    path = args.workdir / f"{source.identity().name}-{kind}.json"
    times_path = args.workdir / "profile-times.json"
    times: dict[str, float] = json.loads(times_path.read_text()) if times_path.exists() else {}
    started = time.monotonic()
    grid = powers_of_two(args.max_batch)
    contention = kind == "contention"
    result = profile_pass(
        source, path, args.cores, grid, passes, args.rounds, contention=contention
    )
    took = time.monotonic() - started
    times[path.stem] = times.get(path.stem, 0.0) + took
    times_path.write_text(json.dumps(times, indent=1))
    say(f"{path.stem}: {len(result.cells)} cells, pass {passes}, {times[path.stem]:.0f} s so far")
    return result, times[path.stem]


def predict(plan: Plan, table: LatencyTable) -> float:
    """The plan's latency by `table`: its slowest instance (nan if a cell is missing)."""
    cells = [table.get(i.threads, i.batch) for i in plan.instances]
    return max((math.nan if c is None else c) for c in cells)


def candidate_plans(
    cores: int, batch: int, tables: dict[str, LatencyTable]
) -> list[tuple[Plan, list[str]]]:
    """The plans to measure at `batch`, each with its roles: each profile's choice, the fat
    instance, and `cores` single-thread instances (as even as the batch allows)."""
    plans: dict[str, tuple[Plan, list[str]]] = {}

    def add(role: str, plan: Plan) -> None:
        plans.setdefault(plan.describe(), (plan, []))[1].append(role)

    for kind, table in tables.items():
        add(kind, PlanTable(table, cores, batch).plan(cores, batch))
    add("fat", homogeneous(cores, batch, 1, cores))
    add("single", homogeneous(cores, batch, min(cores, batch), 1))
    return list(plans.values())


Measured = dict[tuple[int, str], list[CellStats]]
"""(batch, plan) -> the plan's stats in each round it was measured."""


def measure_round(
    source: ModelSource,
    plans: dict[tuple[int, str], Plan],
    args: argparse.Namespace,
    into: Measured,
) -> None:
    """One round: every plan of `plans` ((batch, plan) -> plan) measured end to end, one worker
    set per thread layout as `packrat bench` runs them, each with its share of the budget."""
    from packrat.pool.engine import Engine

    topology = read_topology()
    by_layout: dict[tuple[int, ...], list[tuple[int, Plan]]] = {}
    for (batch, _), plan in sorted(plans.items()):
        by_layout.setdefault(tuple(i.threads for i in plan.instances), []).append((batch, plan))
    policy = BenchConfig(args.cores, ()).policy.per_pass(args.rounds)
    name = source.identity().name
    for _, items in sorted(by_layout.items()):
        first = allocate(items[0][1], topology)
        with Engine(source, first, EngineConfig()) as engine:
            requests: dict[int, list[Any]] = {}
            for batch, plan in items:
                requests.setdefault(batch, engine.example_requests(batch))
                engine.replan(on_cores(plan, first))
                stats = time_infer(engine, requests[batch], policy)
                into.setdefault((batch, plan.describe()), []).append(stats)
                say(f"{name} B={batch} {plan.describe()}: {stats.mean_ms:.1f} ms (n={stats.n})")


def run_model(model: str, args: argparse.Namespace) -> tuple[list[Row], dict[str, float]]:
    """The rounds for one model; its rows (the last round's candidates) and profiling times."""
    from packrat.models.resolve import resolve_model

    source = resolve_model(model)
    measured: Measured = {}
    plans: dict[tuple[int, str], Plan] = {}
    times: dict[str, float] = {}
    for round_ in range(1, args.rounds + 1):
        say(f"{model}: round {round_} of {args.rounds}")
        tables: dict[str, LatencyTable] = {}
        for kind in KINDS:
            prof, times[f"{model}-{kind}"] = profile(source, kind, args, round_)
            tables[kind] = prof.latency_table().interpolated()
        candidates = all_candidates(args.cores, args.max_batch, tables)
        for (batch, _), (plan, _) in candidates.items():
            plans.setdefault((batch, plan.describe()), plan)
        measure_round(source, plans, args, measured)
    rows = []
    for (batch, described), (plan, roles) in sorted(candidates.items()):
        stats = merge_passes(measured[batch, described])
        rows.append(
            Row(
                model=model,
                batch=batch,
                plan=described,
                roles=roles,
                measured_ms=stats.mean_ms,
                rounds_ms=[p.mean_ms for p in stats.passes or (stats,)],
                n=stats.n,
                predicted_ms={kind: predict(plan, table) for kind, table in tables.items()},
            )
        )
    return rows, times


def all_candidates(
    cores: int, max_batch: int, tables: dict[str, LatencyTable]
) -> dict[tuple[int, str], tuple[Plan, list[str]]]:
    """`candidate_plans` of every batch of the grid, keyed by (batch, plan)."""
    return {
        (batch, plan.describe()): (plan, roles)
        for batch in powers_of_two(max_batch)
        for plan, roles in candidate_plans(cores, batch, tables)
    }


# --- report --------------------------------------------------------------------------------


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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,bert-base")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 1)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=Path("docs/contention.md"))
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.workdir is None:
        if args.render_only:
            parser.error("--render-only needs --workdir")
        args.workdir = Path(tempfile.mkdtemp(prefix="packrat-contention-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.cores = read_topology().num_cores
    return args


def main() -> None:
    args = parse_args()
    results_path = args.workdir / "results.json"
    if not args.render_only:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        rows: list[Row] = []
        times: dict[str, float] = {}
        for model in models:
            model_rows, model_times = run_model(model, args)
            rows += model_rows
            times.update(model_times)
        versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
        results = {
            "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu_model(),
            "cores": args.cores,
            "versions": versions,
            "command": "python benchmarks/contention.py " + " ".join(sys.argv[1:]),
            "models": models,
            "rounds": args.rounds,
            "profile_times_s": times,
            "rows": [asdict(r) for r in rows],
        }
        results_path.write_text(json.dumps(results, indent=1))
    results = json.loads(results_path.read_text())
    report = render(results, args)
    args.output.write_text(report + kept_analysis(args.output))
    say(f"wrote {args.output}; work directory {args.workdir}")


if __name__ == "__main__":
    main()
