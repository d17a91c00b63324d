"""Packrat against the fat instance on the paper's machines and larger ones, simulated (issue 7).

    python benchmarks/simulate_paper.py [--profiles ../shared/paper-profiles]
        [--machines cloudlab-c6420:16,skylake2x:18] [--models resnet50,inception_v3,gpt2,bert]
        [--batches 1,2,4,...,1024]
        [--synthetic 64,128] [--load 0.7] [--bursts 10] [--open-requests 200000]
        [--max-batch-delay 5] [--overhead-ms 1] [--switch-ms 1] [--noise 0] [--seed 0]
        [--output docs/simulate.md]

(with the project's venv active). Simulates, with `packrat.sim` (the server's batching,
optimizer, placement, split and policy; each instance taking its profiled latency), one
served model on the published single-instance profiles of the paper's two machines
(cloudlab-c6420, 16 cores; skylake2x, 18 cores; TorchScript rows) and on synthetic 64- and
128-core profiles extrapolated from the c6420's (`packrat.sim.synthetic`), for each batch
size B of --batches, three servers: `--policy auto`, `--fat` and `single` (one
single-thread instance per core), all with `--max-batch-size B`.

Two loads per batch size:

- bursts: B requests at once, the next burst once all are answered (--bursts of them): the
  paper's latency per batch size, each burst one batch of B;
- open loop: Poisson arrivals at --load (0.7) of the fat instance's capacity at full batches,
  B / L(T, B) requests/s, for about --open-requests requests (at least 20 of the fat
  instance's batches of B): the batches then come in every size up to B.

Queues hold 4B requests (at least 100), with no expected-wait limit (TorchServe's, which the
paper extended, refuses only when its queue is full). Plans use the profiled batch sizes only
(`--no-interpolate`: the paper's optimizer, and fast at 128 cores and B = 1024).

Writes the report (Markdown, default docs/simulate.md; the hand-written analysis after the
`<!-- analysis: ... -->` marker line of an existing file is kept) and its plots next to it
(simulate-speedup.png, simulate-p99.png). Takes a few minutes on one core.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from packrat.controller.batching import BatchingConfig
from packrat.profiler.profile_file import load_profile
from packrat.sim import (
    SimConfig,
    SimResult,
    Timing,
    bursts,
    make_planning,
    poisson_load,
    simulate_profile,
    synthetic_profile,
)

from harness.report import kept_analysis
from harness.simulate_paper.cases import MIN_FAT_BATCHES, SYNTHETIC_FROM, Case, Point
from harness.simulate_paper.report import mean, plot, report, speedups

REPO = Path(__file__).resolve().parents[1]
MACHINES = (("cloudlab-c6420", 16), ("skylake2x", 18))
MODELS = ("resnet50", "inception_v3", "gpt2", "bert")
POLICIES = ("auto", "fat", "single")
BATCHES = tuple(2**k for k in range(11))
FITS = {"amdahl+threads": True, "amdahl": False}  # synthetic models: with a per-thread cost or not


def cases(args: argparse.Namespace) -> list[Case]:
    """The published machines' profiles, then the synthetic ones fitted to SYNTHETIC_FROM's."""
    found = []
    for machine, cores in args.machines:
        for model in args.models:
            profile = load_profile(args.profiles / machine / f"{model}_latency.csv")
            found.append(Case(machine, cores, model, profile.latency_table()))
    for cores in args.synthetic:
        for kind, per_thread in FITS.items():
            for model in args.models:
                source = load_profile(args.profiles / SYNTHETIC_FROM / f"{model}_latency.csv")
                synthetic, fit = synthetic_profile(source, cores, per_thread)
                table = synthetic.latency_table()
                found.append(Case("synthetic", cores, model, table, fit, kind))
    return found


def run_case(case: Case, args: argparse.Namespace) -> dict[int, dict[str, Point]]:
    """Every policy at every batch size, bursts and open loop."""
    points: dict[int, dict[str, Point]] = {}
    for batch in args.batches:
        fat_ms = case.table.get(case.cores, batch)
        one_ms = case.table.get(1, batch)
        if fat_ms is None or one_ms is None:
            continue
        batching = BatchingConfig(
            max_batch_size=batch,
            max_batch_delay_ms=args.max_batch_delay,
            max_queue=max(100, 4 * batch),
            max_queue_wait_ms=1e12,
        )
        timing = Timing(args.overhead_ms, args.switch_ms, args.noise)
        base = SimConfig(case.cores, batching=batching, timing=timing, seed=args.seed,
                         interpolate=False)  # fmt: skip
        planning = make_planning(case.table, base)  # shared: planning is the slow part
        # Bursts far enough apart for one thread to serve a whole one (the slowest plan).
        period_s = 2 * (one_ms + args.max_batch_delay) / 1000.0 + 1.0
        burst_load = bursts(batch, args.bursts, period_s)
        rate = args.load * batch / ((fat_ms + args.overhead_ms) / 1000.0)
        duration = max(args.open_requests / rate, MIN_FAT_BATCHES * fat_ms / 1000.0)
        open_load = poisson_load(rate, duration, seed=args.seed)
        points[batch] = {}
        for policy in POLICIES:
            config = SimConfig(case.cores, policy=policy, batching=batching, timing=timing,
                               seed=args.seed, interpolate=False)  # fmt: skip
            burst = simulate_profile(planning, config, burst_load)
            opened = simulate_profile(planning, config, open_load)
            points[batch][policy] = point(policy, planning.optimal(batch).describe(), burst,
                                          opened, rate)  # fmt: skip
    return points


def point(policy: str, optimal: str, burst: SimResult, opened: SimResult, rate: float) -> Point:
    plans = {
        "auto": optimal,
        "fat": next(iter(burst.time_per_plan_s)),
        "single": next(iter(burst.time_per_plan_s)),
    }
    latency = opened.overall().latency
    return Point(
        policy=policy,
        plan=plans[policy],
        burst_ms=float(burst.latencies_ms.mean()),
        rate_rps=rate,
        open_mean_ms=latency.mean_ms if latency else math.nan,
        open_p99_ms=latency.p99_ms if latency else math.nan,
        open_batch=opened.mean_batch_size,
        open_refused=opened.overall().refused,
        open_switches=opened.switches,
    )


def machines(text: str) -> list[tuple[str, int]]:
    """--machines: `NAME:CORES,...`, each a folder of --profiles and its core count."""
    found = []
    for item in text.split(","):
        name, _, cores = item.partition(":")
        if not cores.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r}: expected NAME:CORES, e.g. skylake2x:18")
        found.append((name, int(cores)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", type=Path, default=REPO.parent / "shared" / "paper-profiles")
    parser.add_argument("--machines", type=machines, default=list(MACHINES))
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")],
                        default=list(BATCHES))  # fmt: skip
    parser.add_argument("--synthetic", type=lambda s: [int(v) for v in s.split(",") if v],
                        default=[64, 128])  # fmt: skip
    parser.add_argument("--load", type=float, default=0.7)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--open-requests", type=int, default=200_000)
    parser.add_argument("--max-batch-delay", type=float, default=5.0)
    parser.add_argument("--overhead-ms", type=float, default=1.0)
    parser.add_argument("--switch-ms", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "simulate.md")
    args = parser.parse_args()

    started = time.monotonic()
    results: list[tuple[Case, dict[int, dict[str, Point]]]] = []
    for case in cases(args):
        began = time.monotonic()
        points = run_case(case, args)
        results.append((case, points))
        burst = mean(speedups(points, "fat", "burst_ms"))
        opened = mean(speedups(points, "fat", "open_mean_ms"))
        print(f"{case.label} {case.model}: bursts {burst:.2f}x, open loop {opened:.2f}x "
              f"({time.monotonic() - began:.0f} s)", flush=True)  # fmt: skip
    took_s = time.monotonic() - started
    args.output.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.output.with_name(f"{args.output.stem}-speedup.png"), "open_mean_ms")
    plot(results, args.output.with_name(f"{args.output.stem}-p99.png"), "open_p99_ms")
    args.output.write_text(report(results, args, took_s) + kept_analysis(args.output))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
