"""The end-to-end benchmark suite (issue 5) that writes docs/benchmarks/.

Packrat against the fat instance, T single-thread instances and TorchServe 0.12, end to end;
and `packrat bench`'s measured speedups beside those its profile predicted.

    python benchmarks/e2e.py [--models resnet50,bert-base,gpt2] [--fractions 0.3,0.6,0.85]
        [--phase-s 15] [--max-batch-size 8] [--max-batch-delay 10] [--bursts 5]
        [--bench-batches 1,2,4,8,16,32,64] [--no-bench] [--systems auto,fat,single,ts-1,ts-T]
        [--rounds 3] [--seed 0] [--ts-venv /tmp/ts-venv] [--output docs/benchmarks/README.md]
        [--workdir DIR] [--render-only]

(with the project's venv active; HF_HUB_OFFLINE=1 is set for everything that loads a model).

For each model:

1. Microbenchmark (benchmarks/e2e_micro.py, in a child process, once): the model's profile for
   batches up to the largest of --bench-batches (the sampling `packrat serve` uses on first
   start, cached in the work directory, where every server below finds it), then `run_bench`
   (what `packrat bench` runs) over --bench-batches with a shorter sampling policy.
2. Rates: the fat instance's capacity, --max-batch-size / L(T, --max-batch-size) from that
   profile, times each of --fractions (two significant digits).
3. --rounds rounds (default 3). In each, every system runs once, one after another, in an
   order rotated from round to round (ABCDE, BCDEA, CDEAB: `serving.rotated`, as
   benchmarks/reconfigure.py does), so that no system always runs first or last while the
   machine drifts (10-30% within minutes on this 2-core VM). The systems, each with the same
   batching (--max-batch-size, and --max-batch-delay ms): `packrat serve MODEL --policy auto`,
   `--fat`, `--plan '<T,1,ceil(B/T)>'`; TorchServe serving the same model exported with
   `packrat export` (benchmarks/torchserve/raw_tensor_handler.py) with 1 worker of T threads,
   and with T workers of 1 thread (OMP_NUM_THREADS=1 and torch.set_num_threads(1) in the
   handler). A system's run in a round: start the server, bursts of N = 1, 2, 4, ...
   --max-batch-size requests sent at once, the next when all are answered (2 warm-up bursts,
   then --bursts measured: the latency of a batch of N end to end, like the paper's Figure 5),
   then open-loop arrivals at each rate for --phase-s seconds, then stop the server.
   Arrivals: exactly round(rate x --phase-s) requests at sorted uniform times (a Poisson
   process conditioned on its count, so the rate that runs is the rate asked for, up to
   rounding; a free Poisson count strays by about +-sqrt(count): the single-round report of
   2026-11-28 ran a "2.7 req/s" phase at 3.87), seeded by --seed, the round and the rate:
   every system gets the same times in a round, each round new ones. Latency counts from
   each request's scheduled send time. After each phase, a Packrat server's plan, switches
   (management API) and batch sizes (metrics) are recorded (benchmarks/harness/e2e/plans.py).

Servers are started afresh in every round rather than kept up across rounds: five servers up
at once would hold five models' workers and TorchServe's JVMs in memory while only one is
measured, and the idle ones (JVM threads, event loops) would still take slices of the 2 cores
from the one under load; a fresh start also makes every round the same procedure (auto starts
from the same plan; each TorchServe from a cold JVM), so the spread between rounds is the
spread a user re-running would see. It costs 5 to 20 s per server and round (start: 2-7 s on
a quiet machine, 10-17 s on a busy one; stop and the check for leftover processes).

Writes the report (Markdown, default docs/benchmarks/README.md; the hand-written analysis after
the `<!-- analysis: ... -->` marker line is kept) and its plots next to it. The work directory
(default: a new temp directory, kept and named at the end) holds every run's raw results in
runs/MODEL/SYSTEM/rROUND (loadgen JSON per batch size, JSON and CSV per rate, server.json with
the plans each phase ran, the servers' logs), the microbenchmark's JSON per model, and
session.json (command, options, machine, each round's order); `--render-only --workdir DIR`
writes the report again from them, running nothing. Every server is stopped (SIGTERM for Packrat,
`torchserve --stop`) and checked to leave no process behind.

With the defaults on 2 cores (3 models, 5 systems, 3 rounds) it takes about 70 minutes from
a fresh clone: per model the profile to batch 64 and the microbenchmark (2.5 to 7 minutes,
once; 16 minutes for the 3 models), the TorchScript export, then 3 rounds of 5 servers of 1 to
1.5 minutes each (17 minutes per round for the 3 models); GPT-2 is the slowest model. The
single round of 2026-11-28 took 33 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from packrat.optimizer import PlanTable
from packrat.optimizer.table import LatencyTable
from packrat.profiler.profile_file import load_profile
from packrat.profiler.sweep import powers_of_two
from packrat.topology import read_topology

from harness.e2e.plots import write_plots
from harness.e2e.report import render
from harness.e2e.running import run_system
from harness.e2e.runs import LoadPlan, System, SystemRun, load_runs, say, systems
from harness.e2e.session import ModelSession, Session, load_session, save_session
from harness.e2e.stats import ModelRuns
from harness.report import cpu_model, kept_analysis, package_versions
from harness.rounds import rotated
from harness.torchserve import ensure_ts_venv, export_and_archive
from harness.torchserve import versions as torchserve_versions

REPO = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "bert-base", "gpt2")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--fractions", default="0.3,0.6,0.85",
                        help="rates as fractions of the fat instance's capacity")  # fmt: skip
    parser.add_argument("--phase-s", type=float, default=15.0, help="seconds of load per rate")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-batch-delay", type=int, default=10, help="ms")
    parser.add_argument("--bursts", type=int, default=5, help="measured bursts per batch size")
    parser.add_argument("--bench-batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--no-bench", action="store_true", help="skip the microbenchmark")
    parser.add_argument("--systems", default="auto,fat,single,ts-1,ts-T")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ts-venv", type=Path, default=Path("/tmp/ts-venv"))
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks" / "README.md")
    parser.add_argument("--workdir", type=Path, help="raw results and logs (default: temp)")
    parser.add_argument(
        "--render-only", action="store_true", help="write the report from --workdir's runs"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def chosen_systems(args: argparse.Namespace, cores: int) -> list[System]:
    names = [n.replace("ts-T", f"ts-{cores}") for n in args.systems.split(",") if n]
    known = systems(cores, args.max_batch_size)
    unknown = set(names) - {s.key for s in known}
    if unknown:
        keys = ", ".join(s.key for s in known)
        raise SystemExit(f"unknown systems {sorted(unknown)}: choose from {keys} (ts-T)")
    return [s for s in known if s.key in names]


RUN_OPTIONS = ("models", "fractions", "phase_s", "max_batch_size", "max_batch_delay",
               "bursts", "bench_batches", "no_bench", "systems", "rounds", "seed")  # fmt: skip
"""The options that shape a run; --render-only takes them from the run, not its command."""


def main() -> None:
    args = parse_args()
    if args.render_only:
        if args.workdir is None:
            raise SystemExit("--render-only reads the runs of --workdir DIR")
        session = load_session(args.workdir)
        for name, value in session.options.items():
            setattr(args, name, value)
    else:
        session = run_all(args)
    chosen = chosen_systems(args, session.cores)
    keys = [s.key for s in chosen]
    runs = {m.model: ModelRuns(load_runs(args.workdir, m.model, keys, args.rounds), args.rounds)
            for m in session.models}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_plots(session, runs, chosen, args.workdir, args.output.parent)
    report = render(session, runs, chosen, args.workdir)
    print(report)
    args.output.write_text(report + kept_analysis(args.output))
    print(f"wrote {args.output} and its plots; raw results and logs in {args.workdir}")


def run_all(args: argparse.Namespace) -> Session:
    started = time.monotonic()
    cores = read_topology().num_cores
    chosen = chosen_systems(args, cores)
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="e2e-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m]
    uses_ts = any(s.kind == "torchserve" for s in chosen)
    if uses_ts:
        ensure_ts_venv(args.ts_venv, extra=("orjson",))
    versions = {**package_versions(), **(torchserve_versions(args.ts_venv) if uses_ts else {})}
    command = "python benchmarks/e2e.py " + " ".join(sys.argv[1:])
    session = Session(
        command.strip(),
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        {name: getattr(args, name) for name in RUN_OPTIONS},
        versions,
        cores,
        f"{platform.node() or 'this machine'}: {cpu_model()}, {cores} usable cores, "
        f"Linux {platform.release()}",
    )
    print(
        f"{len(models)} models x {len(chosen)} systems x {args.rounds} rounds on {cores} cores; "
        f"work directory {args.workdir}",
        flush=True,
    )
    for model in models:
        run_model(model, chosen, args, started, session)
        session.total_s = time.monotonic() - started
        save_session(session, args.workdir)
    say("all", f"done in {session.total_s / 60:.1f} min", started)
    return session


def run_model(
    model: str, chosen: list[System], args: argparse.Namespace, started: float, whole: Session
) -> None:
    """The microbenchmark, then the rounds of `chosen` on `model`, added to `whole` (saved
    after every round)."""
    cores = read_topology().num_cores
    seconds: dict[str, float] = {}
    begun = time.monotonic()
    micro_file = Path("micro") / f"{model}.json"
    say(model, "profile and microbenchmark", started)
    micro(model, args, args.workdir / micro_file)
    seconds["profile + microbenchmark"] = time.monotonic() - begun
    load = {"profile + microbenchmark": os.getloadavg()[0]}
    saved = json.loads((args.workdir / micro_file).read_text())
    profile = load_profile(Path(saved["profile_path"]))
    fat_ms = profile.cells[(cores, args.max_batch_size)].mean_ms
    capacity = args.max_batch_size / fat_ms * 1000.0
    fractions = [float(f) for f in args.fractions.split(",")]
    rates = [_round(capacity * f) for f in fractions]
    say(model, f"fat capacity {capacity:.2f} req/s (profile); rates {rates} req/s", started)
    batch_sizes = powers_of_two(args.max_batch_size)
    plan = LoadPlan(model, args.max_batch_size, args.max_batch_delay, batch_sizes,
                    args.bursts, tuple(rates), args.phase_s, args.seed)  # fmt: skip
    session = ModelSession(model, capacity, rates, str(micro_file), seconds=seconds, load_avg=load)
    session.predicted = predicted(profile.latency_table(), cores, batch_sizes)
    every = tuple(range(1, args.max_batch_size + 1))
    session.every_batch = predicted(profile.latency_table().interpolated(), cores, every)
    whole.models.append(session)
    ts = None
    if any(s.kind == "torchserve" for s in chosen):
        begun = time.monotonic()
        store = args.workdir / "torchserve" / model / "store"
        say(model, "packrat export + torch-model-archiver for TorchServe", started)
        export_and_archive(model, store, args.workdir, args.ts_venv, "no-archive")
        ts = (args.ts_venv, store)
        seconds["export for TorchServe"] = time.monotonic() - begun
        load["export for TorchServe"] = os.getloadavg()[0]
    for index in range(args.rounds):
        order = rotated(chosen, index)
        session.order.append([s.key for s in order])
        say(model, f"round {index + 1} of {args.rounds}: {', '.join(session.order[-1])}", started)
        for system in order:
            begun = time.monotonic()
            done = run_system(system, plan, index + 1, args.workdir, ts, started)
            stage = f"round {index + 1}: {system.key}"
            seconds[stage] = time.monotonic() - begun
            load[stage] = os.getloadavg()[0]
            whole.notes.extend(problems(done, system))
        whole.total_s = time.monotonic() - started
        save_session(whole, args.workdir)


def micro(model: str, args: argparse.Namespace, out: Path) -> None:
    """The microbenchmark child (profile, then `run_bench`), its progress on our stderr."""
    profile_batch = max([args.max_batch_size, *_ints(args.bench_batches)])
    command = [sys.executable, str(Path(__file__).with_name("e2e_micro.py")), model,
               "--out", str(out), "--batches", args.bench_batches,
               "--profile-batch", str(profile_batch)]  # fmt: skip
    if args.no_bench:
        command.append("--no-bench")
    env = {**os.environ, "PACKRAT_CACHE_DIR": str(args.workdir / "cache"), "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env)


def predicted(
    table: LatencyTable, cores: int, batches: tuple[int, ...]
) -> dict[int, dict[str, Any]]:
    """Per batch size: the optimal plan and its latency, and the fat instance's (None where
    the table has no such cell), by `table`."""
    plans = PlanTable(table, cores, max(batches))
    fat = table.monotone_in_batch()
    found = {}
    for batch in batches:
        plan = plans.plan(cores, batch)
        found[batch] = {"plan": plan.describe(), "plan_ms": plan.latency_ms,
                        "fat_ms": fat.get(cores, batch)}  # fmt: skip
    return found


def problems(run: SystemRun, system: System) -> list[str]:
    """What went wrong with a run, as notes for the report."""
    found = []
    where = f"{run.model}, {system.name}, round {run.round}"
    if run.error:
        found.append(f"{where}: failed: {run.error}")
    if run.exit_code != 0:
        found.append(f"{where}: exit status {run.exit_code} when stopped (expected 0).")
    if run.leftover_pids:
        found.append(f"{where}: processes {run.leftover_pids} outlived the server (killed).")
    return found


def _ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item]


def _round(rate: float) -> float:
    """Two significant digits: rates read well in tables and file names."""
    return float(f"{rate:.2g}")


if __name__ == "__main__":
    main()
