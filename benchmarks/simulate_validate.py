"""The simulator against the real server on this machine, for the same arrivals (issue 7).

    python benchmarks/simulate_validate.py [--model bert-base] [--profile FILE]
        [--rates 2,4,6] [--duration-s 60] [--steps 2:30,6:30,2:30] [--policy auto]
        [--max-batch-size 8] [--max-batch-delay 5] [--seed 0] [--overhead-ms auto]
        [--switch-ms 1] [--noise auto] [--settle-s 5] [--target 0.15] [--interleave]
        [--workdir DIR] [--output docs/simulate-validate.md]

(with the project's venv active; HF_HUB_OFFLINE=1 is set for the server). Starts one
`packrat serve MODEL --policy POLICY` (with --profile FILE if given, else it profiles the
model into WORKDIR/cache on first use), warms it up (closed loops of 1, 2, 4, ... up to
--max-batch-size clients), then sends, one after another, a seeded Poisson load at each of
--rates for --duration-s seconds and the stepped load --steps (`--steps none` skips it),
recording every request's latency from its scheduled send time. The simulator
(`packrat.sim`) then serves the very same arrival times with the profile the server planned
with, its cores and batching: p50 and p99 simulated against measured, after the first
--settle-s seconds of each load, with the target |sim / real - 1| <= --target.

`--noise auto` takes the noise of each instance's latency from the profile (the median
coefficient of variation of its cells). `--overhead-ms` is the time a batch spends outside
the model (HTTP, pipes, the split, the client; docs/serve-overhead.md); `auto` measures it
after the warm-up: --calibration requests one at a time (each a batch of 1 on an idle
server), their median latency less the simulated one without overhead. Writes the report (default
docs/simulate-validate.md; the analysis after the `<!-- analysis: ... -->` marker line of an
existing file is kept) and a latency CDF plot next to it (simulate-validate.png).

`--interleave` is for a machine whose speed drifts over minutes (this 2-core VM: up to 20%),
where a profile measured once no longer says how fast the instances run by the time the loads
do. The profile is then made by this script in passes spread over the run: one pass before
the server starts (the server plans with it), one after each load (while the server idles),
each with its share of `packrat profile`'s default budget over batches 1, 2, 4, ...
--max-batch-size (`packrat profile --passes`: a cell is the median of its passes); the
overhead is calibrated before each load; and each load is simulated with the final profile
and its own overhead. --profile is then refused. The work
directory keeps the server's log and each load's requests (loadgen CSV, which `packrat
simulate --trace` reads). Takes about (number of loads) x --duration-s plus the server's
start (minutes the first time: it profiles the model).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packrat.bench.loadgen import (
    ClosedLoop,
    LoadOptions,
    LoadResult,
    OpenLoop,
    Target,
    run_load,
    write_csv,
)
from packrat.controller.batching import BatchingConfig
from packrat.optimizer.table import LatencyTable
from packrat.profiler.profile_file import Profile, load_profile
from packrat.profiler.sweep import powers_of_two
from packrat.sim import (
    SimConfig,
    SimResult,
    Timing,
    bursts,
    poisson_load,
    simulate_profile,
    stepped,
)

from harness.client import describe, payload_for, warm_up
from harness.report import cpu_model, kept_analysis
from harness.rounds import profile_pass
from harness.serve import packrat_serve

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 900.0  # the first start profiles the model


@dataclass(frozen=True)
class Comparison:
    """One load, measured and simulated: p50 and p99 of the requests after the settling."""

    name: str
    requests: int
    real_failed: int
    sim_refused: int
    real_p50_ms: float
    sim_p50_ms: float
    real_p99_ms: float
    sim_p99_ms: float
    real_ms: np.ndarray
    sim_ms: np.ndarray
    overhead_ms: float  # per batch, as simulated

    @property
    def p50_error(self) -> float:
        return self.sim_p50_ms / self.real_p50_ms - 1.0

    @property
    def p99_error(self) -> float:
        return self.sim_p99_ms / self.real_p99_ms - 1.0


def loads(args: argparse.Namespace) -> list[tuple[str, OpenLoop]]:
    found = [
        (f"poisson {rate:g} req/s", poisson_load(rate, args.duration_s, args.seed))
        for rate in args.rates
    ]
    if args.steps != "none":
        found.append((f"steps {args.steps}", stepped(args.steps, args.seed)))
    return found


def served_profile(args: argparse.Namespace) -> Path:
    """The profile to simulate with: --profile, the interleaved one, else the one the server
    cached."""
    if args.profile is not None:
        return Path(args.profile)
    if args.interleave:
        return interleaved_path(args)
    cached = [
        p
        for p in (args.workdir / "cache" / "profiles").glob(f"{args.model}-*.json")
        if not p.stem.endswith(("-contention", "-release"))
    ]
    if not cached:
        raise SystemExit(f"no cached profile of {args.model} in {args.workdir / 'cache'}")
    return max(cached, key=lambda p: p.stat().st_mtime)


def interleaved_path(args: argparse.Namespace) -> Path:
    return args.workdir / f"{args.model}-interleaved.json"


class Interleaved:
    """--interleave's profile: a pass of every cell now and then, `of` passes in all."""

    def __init__(self, args: argparse.Namespace, of: int) -> None:
        from packrat.models.resolve import resolve_model
        from packrat.topology import read_topology

        self.path, self.of, self.done = interleaved_path(args), of, 0
        self.grid = powers_of_two(args.max_batch_size)
        self.source = resolve_model(args.model)
        self.cores = read_topology().num_cores

    def one_more_pass(self) -> None:
        self.done += 1
        started = time.monotonic()
        profile_pass(self.source, self.path, self.cores, self.grid, self.done, self.of)
        took = time.monotonic() - started
        print(f"profile pass {self.done} of {self.of}: {took:.0f} s", flush=True)


def noise_of(profile: Profile, asked: str) -> float:
    """--noise: a number, or "auto": the median CV of the profile's cells (of their passes' for
    cells measured in passes; 0 if it has none)."""
    if asked != "auto":
        return float(asked)
    # A cell measured in passes: the spread within each pass, not the drift between them.
    runs = [p for c in profile.cells.values() for p in (c.passes or (c,))]
    cvs = [p.stdev_ms / p.mean_ms for p in runs if p.n > 1 and p.mean_ms > 0]
    return statistics.median(cvs) if cvs else 0.0


def compare(
    name: str, load: OpenLoop, real: LoadResult, sim: SimResult, settle_s: float, overhead_ms: float
) -> Comparison:
    """Latencies of the requests scheduled after `settle_s`, measured (successful ones) and
    simulated (served ones), in the same arrival order."""
    kept = load.arrivals_s >= settle_s
    records = [r for r, keep in zip(real.records, kept, strict=True) if keep]
    real_ms = np.array([r.latency_ms for r in records if r.ok and r.latency_ms is not None])
    done = sim.done_s[kept]
    sim_ms = (done[np.isfinite(done)] - load.arrivals_s[kept][np.isfinite(done)]) * 1000.0
    return Comparison(
        name=name,
        requests=int(kept.sum()),
        real_failed=sum(not r.ok for r in records),
        sim_refused=int((~np.isfinite(done)).sum()),
        real_p50_ms=float(np.percentile(real_ms, 50)) if real_ms.size else math.nan,
        sim_p50_ms=float(np.percentile(sim_ms, 50)) if sim_ms.size else math.nan,
        real_p99_ms=float(np.percentile(real_ms, 99)) if real_ms.size else math.nan,
        sim_p99_ms=float(np.percentile(sim_ms, 99)) if sim_ms.size else math.nan,
        real_ms=real_ms,
        sim_ms=sim_ms,
        overhead_ms=overhead_ms,
    )


def calibrate(lone: LoadResult, table: LatencyTable, config: SimConfig) -> float:
    """The per-batch overhead, ms: the median latency of requests sent one at a time (each a
    batch of 1 on an idle server) less the simulated one without overhead (at least 0)."""
    real = [r.latency_ms for r in lone.records if r.ok and r.latency_ms is not None]
    if not real:
        raise SystemExit("the calibration requests all failed")
    sim = simulate_profile(table, config, bursts(1, len(real), period_s=10.0))
    return max(0.0, float(np.median(real)) - float(np.median(sim.latencies_ms)))


def plot(comparisons: list[Comparison], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4 * len(comparisons), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title)
    for k, c in enumerate(comparisons):
        ax = fig.add_subplot(1, len(comparisons), k + 1)
        for values, label in ((c.real_ms, "measured"), (c.sim_ms, "simulated")):
            if values.size:
                xs = np.sort(values)
                ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms")
        ax.set_ylabel("share of requests")
        ax.set_title(c.name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, format="png", dpi=110)


def report(
    comparisons: list[Comparison],
    args: argparse.Namespace,
    info: dict[str, str],
    png: Path,
) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/simulate_validate.py " + " ".join(sys.argv[1:])
    target = args.target
    rows = []
    met = 0
    for c in comparisons:
        ok = abs(c.p50_error) <= target and abs(c.p99_error) <= target
        met += ok
        rows.append(
            f"| {c.name} | {c.requests} | {c.overhead_ms:.1f} | {c.real_failed} / {c.sim_refused} "
            f"| {c.real_p50_ms:.1f} / {c.sim_p50_ms:.1f} ({c.p50_error:+.1%}) "
            f"| {c.real_p99_ms:.1f} / {c.sim_p99_ms:.1f} ({c.p99_error:+.1%}) "
            f"| {'met' if ok else '**missed**'} |"
        )
    lines = [
        "# The simulator against the real server (issue 7)",
        "",
        f"Command: `{command.strip()}` ({stamp}, {cpu_model()}, {info['cores']} cores).",
        "",
        f"One `packrat serve {args.model} --policy {args.policy} --max-batch-size "
        f"{args.max_batch_size} --max-batch-delay {args.max_batch_delay:g}` (plan after the "
        f"warm-up {info['plan']}), loads one after another; then `packrat.sim` on the same "
        f"arrival times with the profile it planned with (`{info['profile']}`), "
        f"overhead {info['overhead']} ms per batch, switch {args.switch_ms:g} ms, noise CV "
        f"{info['noise']}. Latency from each request's scheduled time; requests scheduled in "
        f"the first {args.settle_s:g} s of each load left out.{info['interleave']}",
        "",
        f"Target: simulated p50 and p99 within {target:.0%} of measured. Met for {met} of "
        f"{len(comparisons)} loads.",
        "",
        "| load | requests | overhead, ms | failed (real) / refused (sim) | p50, ms: real / sim | "
        "p99, ms: real / sim | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        *rows,
        "",
        f"![latency CDFs, measured and simulated]({png.name})",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bert-base")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--rates", type=lambda s: [float(v) for v in s.split(",")],
                        default=[2.0, 4.0, 6.0])  # fmt: skip
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--steps", default="2:30,6:30,2:30")
    parser.add_argument("--policy", default="auto")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-batch-delay", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overhead-ms", default="auto")
    parser.add_argument("--calibration", type=int, default=30)
    parser.add_argument("--switch-ms", type=float, default=1.0)
    parser.add_argument("--noise", default="auto")
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--target", type=float, default=0.15)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--interleave", action="store_true")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "simulate-validate.md")
    args = parser.parse_args()
    if args.interleave and (args.profile is not None or args.overhead_ms != "auto"):
        parser.error("--interleave makes its own profile and calibrates the overhead itself")
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="simulate-validate-"))
    args.workdir.mkdir(parents=True, exist_ok=True)

    options = ["--policy", args.policy, "--max-batch-size", str(args.max_batch_size),
               "--max-batch-delay", f"{args.max_batch_delay:g}"]  # fmt: skip
    interleaved = Interleaved(args, len(loads(args)) + 1) if args.interleave else None
    if interleaved is not None:
        interleaved.one_more_pass()
        options += ["--profile", str(interleaved.path)]
    elif args.profile is not None:
        options += ["--profile", str(args.profile)]
    measured: list[tuple[str, OpenLoop, LoadResult, LoadResult | None]] = []
    log = args.workdir / "packrat.log"
    print(f"starting packrat serve {args.model} {' '.join(options)} (log: {log})", flush=True)
    with packrat_serve(args.model, options, args.workdir, log, START_TIMEOUT_S) as server:
        target = Target(server.urls["inference"], args.model)
        described = describe(server.urls, args.model)
        payload = payload_for(described)
        warm_up(target, payload, args.max_batch_size)
        described = describe(server.urls, args.model)
        lone = None
        calibration = LoadOptions(payload, args.timeout_s)
        if args.overhead_ms == "auto":
            lone = run_load(target, ClosedLoop(1, requests=args.calibration), calibration)
        for k, (name, load) in enumerate(loads(args)):
            if interleaved is not None and k > 0:  # each load its own calibration
                lone = run_load(target, ClosedLoop(1, requests=args.calibration), calibration)
            print(f"{name}: {load.num_requests} requests in {load.duration_s:g} s", flush=True)
            result = run_load(target, load, LoadOptions(payload, args.timeout_s))
            write_csv(result.records, args.workdir / f"{name.replace(' ', '-')}.csv")
            measured.append((name, load, result, lone))
            time.sleep(2.0)  # let the queue drain before the next load
            if interleaved is not None:
                interleaved.one_more_pass()  # the server idles meanwhile
    profile_path = served_profile(args)
    profile = load_profile(profile_path)
    noise = noise_of(profile, args.noise)
    config = SimConfig(
        cores=int(described["plan"]["cores"]),
        policy=args.policy,
        batching=BatchingConfig(
            max_batch_size=args.max_batch_size,
            max_batch_delay_ms=args.max_batch_delay,
            max_queue=int(described["batching"]["max_queue"]),
            max_queue_wait_ms=float(described["batching"]["max_queue_wait_ms"]),
        ),
        timing=Timing(0.0, args.switch_ms, 0.0),
        seed=args.seed,
    )
    table = profile.latency_table()
    comparisons = []
    overheads = []
    for name, load, real, lone in measured:
        overhead_ms = (
            calibrate(lone, table, config) if lone is not None else float(args.overhead_ms)
        )
        overheads.append(overhead_ms)
        print(f"{name}: overhead per batch {overhead_ms:.2f} ms, noise CV {noise:.3f}", flush=True)
        timing = Timing(overhead_ms, args.switch_ms, noise)
        sim = simulate_profile(table, dataclasses.replace(config, timing=timing), load)
        comparisons.append(compare(name, load, real, sim, args.settle_s, overhead_ms))
        c = comparisons[-1]
        print(f"{name}: p50 real {c.real_p50_ms:.1f} sim {c.sim_p50_ms:.1f} ({c.p50_error:+.1%}), "
              f"p99 real {c.real_p99_ms:.1f} sim {c.sim_p99_ms:.1f} ({c.p99_error:+.1%})",
              flush=True)  # fmt: skip
    info = {
        "cores": str(config.cores),
        "plan": f"`{described['plan']['describe']}`",
        "profile": str(profile_path),
        "noise": f"{noise:.3f}" + (" (the profile's median)" if args.noise == "auto" else ""),
        "overhead": " / ".join(f"{ms:.2f}" for ms in sorted(set(overheads)))
        + (
            f" (measured on {args.calibration} lone requests"
            + (" before each load)" if args.interleave else ")")
            if args.overhead_ms == "auto"
            else ""
        ),
        "interleave": (
            f" The profile was measured by this script in {len(measured) + 1} passes, one "
            "before the server started and one after each load, each cell the median of its "
            "passes (`--interleave`), so it spans the same minutes as the loads."
            if args.interleave
            else ""
        ),
    }
    png = args.output.with_name(f"{args.output.stem}.png")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    plot(comparisons, png, f"{args.model}: latency measured and simulated, same arrivals")
    args.output.write_text(report(comparisons, args, info, png) + kept_analysis(args.output))
    print(f"wrote {args.output}; requests and the server's log in {args.workdir}")


if __name__ == "__main__":
    main()
