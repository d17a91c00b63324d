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
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from packrat.bench.candidates import homogeneous
from packrat.bench.offline import BenchConfig, on_cores, time_infer
from packrat.models.base import ModelSource
from packrat.optimizer import PlanTable
from packrat.optimizer.table import LatencyTable
from packrat.pool.config import EngineConfig
from packrat.profiler.profile_file import Profile
from packrat.profiler.sweep import powers_of_two
from packrat.stats import CellStats, merge_passes
from packrat.topology import allocate, read_topology
from packrat.types import Plan

from harness.contention.report import KINDS, Row, predict, render
from harness.report import cpu_model, kept_analysis, package_versions
from harness.rounds import profile_pass


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
