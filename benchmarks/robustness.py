"""Flood and soak: Packrat past its capacity, and through many changes of plan (issue 6).

    python benchmarks/robustness.py flood [--model bert-base] [--factor 10] [--flood-s 60]
        [--capacity RPS]
    python benchmarks/robustness.py soak [--model bert-base] [--soak-s 600] [--every-s 60]
        [--load 0.8]
    common: [--max-batch-size 8] [--max-batch-delay 5] [--max-queue 100] [--max-queue-wait MS]
        [--profile FILE] [--workdir DIR] [--output PATH]

(with the project's venv active; HF_HUB_OFFLINE=1 is set for the server). Both start
`packrat serve MODEL` (default policy), warm it up, and measure its capacity: the throughput
of a closed loop of 2 x max-batch-size clients for --probe-s seconds (flood: or take
--capacity, e.g. to flood servers of different settings or versions at one and the same
rate).

- flood: open-loop Poisson load at half the capacity (--calm-s), then --factor times the
  capacity for --flood-s, then half again (--calm-s). Every request must be answered: 200, or
  503 once the model's queue is full (or, overloaded, deeper than --max-queue-wait). Reports
  each phase's answers and latency, the server's memory (PSS and RSS of the server and its
  workers, sampled every second) before, at its peak and after, and how soon after the
  flood latency is back to its level before it.
- soak: Poisson load at --load times the capacity for --soak-s, the plan forced to change every
  --every-s seconds through the management API (pinned to the fat plan, pinned to single-
  thread instances, released to the default policy, in turn). Reports failed requests (must be
  0), the switches, and processes, open files, memory and /dev/shm entries before and after;
  memory (PSS) must grow less than 5%. "Before" is after a warm-up under each plan of the
  rotation, so that every worker has run every plan's batches once (the memory a worker needs
  for its largest batch is allocated on the first one, and kept).

Memory is judged on PSS, not RSS: the workers map one shared weights file, and a sum of RSS
counts it once per worker that has touched it (see packrat.bench.resources).

Writes docs/robustness-flood.md or docs/robustness-soak.md (the hand-written analysis after the
marker line of an existing file is kept) and a latency timeline PNG next to it; the work
directory (default: a new temp directory) keeps the server log, the requests (JSON, CSV) and the
resource samples. Takes about 3 minutes (flood) or 12 minutes (soak) on 2 cores, plus 1 to 3
minutes to profile the model on the first run in a work directory (--profile FILE skips it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx

from packrat.bench.loadgen import (
    LoadOptions,
    LoadResult,
    Payload,
    Target,
    plot_timeline,
    run_load,
    steps,
    write_csv,
    write_json,
)
from packrat.bench.resources import shared_memory_entries, snapshot
from packrat.topology import read_topology

from harness.client import describe, payload_for, warm_up
from harness.report import kept_analysis
from harness.robustness.measure import (
    RECOVERY_FACTOR,
    Sample,
    Sampler,
    capacity_rps,
    minute_medians,
    recovery_s,
    server_pid,
)
from harness.robustness.report import header, memory_rows, mib, ms, phase_table
from harness.serve import packrat_serve

REPO = Path(__file__).resolve().parents[1]
PSS_GROWTH_TARGET = 0.05
SETTLE_S = 5.0


def say(text: str) -> None:
    print(f"[robustness] {text}", flush=True)


def flood(args: argparse.Namespace, urls: dict[str, str], command: str) -> str:
    target, payload = start(args, urls)
    pid = server_pid(urls, args.model)
    capacity = args.capacity
    if capacity is None:
        capacity = capacity_rps(target, payload, 2 * args.max_batch_size, args.probe_s)
        time.sleep(SETTLE_S)  # the probe's last batches finish before the baseline is measured
    calm, heavy = 0.5 * capacity, args.factor * capacity
    schedule = steps(
        [(calm, args.calm_s), (heavy, args.flood_s), (calm, args.calm_s)],
        seed=args.seed,
        names=[
            f"before: {calm:.1f} req/s",
            f"flood: {heavy:.1f} req/s",
            f"after: {calm:.1f} req/s",
        ],
    )
    requests, seconds = schedule.num_requests, schedule.duration_s
    say(f"capacity {capacity:.1f} req/s; {requests} requests in {seconds:g} s")
    with Sampler(pid) as sampler:
        result = run_load(target, schedule, LoadOptions(payload, timeout_s=args.timeout_s))
    save(args, "flood", result, sampler.samples)
    summaries = result.summary().phases
    before = summaries[0].latency
    flood_end_s = args.calm_s + args.flood_s
    back = recovery_s(result, flood_end_s, before.p50_ms) if before is not None else None
    in_flood = [s for s in sampler.samples if args.calm_s <= s.at_s <= flood_end_s]
    others = sum(not r.ok and r.status != 503 for r in result.records)
    lines = header("Flood: 10x capacity (issue 6)", args, command, capacity) + [
        "## Checks",
        "",
        "| check | target | result |",
        "| --- | --- | --- |",
        f"| requests answered 200 or 503 | all | {len(result.records) - others} of "
        f"{len(result.records)} |",
        *memory_rows(sampler.samples, in_flood),
        f"| after the flood, seconds until p50 is within {RECOVERY_FACTOR}x of before "
        f"({ms(before.p50_ms if before else None)} ms) | seconds | "
        f"{'never' if back is None else f'{back:.1f} s'} |",
        "",
        "## Phases",
        "",
        *phase_table(summaries, result),
        "",
        f"![latency per request]({timeline(args, 'flood', result)})",
        "",
    ]
    return "\n".join(lines)


def soak(args: argparse.Namespace, urls: dict[str, str], command: str) -> str:
    target, payload = start(args, urls)
    pid = server_pid(urls, args.model)
    capacity = capacity_rps(target, payload, 2 * args.max_batch_size, args.probe_s)
    rate = args.load * capacity
    schedule = steps([(rate, args.soak_s)], seed=args.seed, names=[f"soak: {rate:.1f} req/s"])
    cores = read_topology().num_cores
    thin = f"<{cores},1,{math.ceil(args.max_batch_size / cores)}>"
    changes = [{"plan": "fat"}, {"plan": thin}, {"policy": "auto"}]
    for change in changes:  # every worker runs every plan's batches once before "before"
        httpx.put(f"{urls['management']}/models/{args.model}/plan", json=change).raise_for_status()
        warm_up(target, payload, args.max_batch_size)
    say(f"capacity {capacity:.1f} req/s; {schedule.num_requests} requests in {args.soak_s:g} s")
    before, shm_before = snapshot(pid), shared_memory_entries()
    made: list[str] = []
    outcome: list[LoadResult] = []
    load = threading.Thread(
        target=lambda: outcome.append(
            run_load(target, schedule, LoadOptions(payload, timeout_s=args.timeout_s))
        )
    )
    with Sampler(pid) as sampler:
        load.start()
        started = time.monotonic()
        k = 0
        while load.is_alive():
            load.join(timeout=max(0.0, started + (k + 1) * args.every_s - time.monotonic()))
            if load.is_alive():
                change = changes[k % len(changes)]
                reply = httpx.put(f"{urls['management']}/models/{args.model}/plan", json=change)
                made.append(f"{json.dumps(change)}: {reply.status_code}")
                say(f"{(k + 1) * args.every_s:g} s: {json.dumps(change)} -> {reply.status_code}")
                k += 1
    (result,) = outcome
    time.sleep(2.0)  # client connections close
    after, shm_after = snapshot(pid), shared_memory_entries()
    switches = httpx.get(f"{urls['management']}/models/{args.model}/switches", timeout=30).json()
    during = [s for s in switches if s["at_unix_s"] >= result.start_unix_s]
    save(args, "soak", result, sampler.samples)
    failed = [r for r in result.records if not r.ok]
    growth = after.pss_bytes / before.pss_bytes - 1.0
    first, last = minute_medians(sampler.samples)
    forced = sum(s["reason"] == "pinned" or s["reason"].startswith("policy") for s in during)
    took = max((s["took_ms"] for s in during), default=0.0)
    lines = header(
        "Soak: 80% of capacity with forced changes of plan (issue 6)", args, command, capacity
    ) + [  # fmt: skip
        "## Checks",
        "",
        "| check | target | result |",
        "| --- | --- | --- |",
        f"| failed requests | 0 | {len(failed)} of {len(result.records)} |",
        f"| memory growth (PSS), server and workers | < {PSS_GROWTH_TARGET:.0%} | "
        f"{growth:+.1%} ({mib(before.pss_bytes)} -> {mib(after.pss_bytes)} MiB) |",
        f"| PSS, median of the first and of the last minute, MiB | flat | {mib(first)} -> "
        f"{mib(last)} |",
        f"| RSS summed over the processes, MiB (counts shared weights once per worker) | - | "
        f"{mib(before.rss_bytes)} -> {mib(after.rss_bytes)} |",
        f"| processes | same | {before.processes} -> {after.processes} |",
        f"| open file descriptors | same | {before.fds} -> {after.fds} |",
        f"| /dev/shm entries | none new | {len(shm_after - shm_before)} new, "
        f"{len(shm_before - shm_after)} gone |",
        "",
        f"Changes forced (every {args.every_s:g} s): {'; '.join(made) or 'none'}. Switches "
        f"during the soak: {len(during)} ({forced} forced, the rest chosen per batch), the "
        f"longest {took:.1f} ms.",
        "",
        *phase_table(result.summary().phases, result),
        "",
        f"![latency per request]({timeline(args, 'soak', result)})",
        "",
    ]
    return "\n".join(lines)


def start(args: argparse.Namespace, urls: dict[str, str]) -> tuple[Target, Payload]:
    described = describe(urls, args.model)
    target, payload = Target(urls["inference"], args.model), payload_for(described)
    say("warming up")
    warm_up(target, payload, args.max_batch_size)
    return target, payload


def save(args: argparse.Namespace, name: str, result: LoadResult, samples: list[Sample]) -> None:
    write_json(result, args.workdir / f"{name}.json")
    write_csv(result.records, args.workdir / f"{name}.csv")
    rows = [s.__dict__ for s in samples]
    (args.workdir / f"{name}-resources.json").write_text(json.dumps(rows, indent=1))


def timeline(args: argparse.Namespace, name: str, result: LoadResult) -> str:
    path = args.output.with_name(f"robustness-{name}.png")
    plot_timeline(result, path, title=f"{args.model}, {name}: latency per request")
    return path.name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("flood", "soak"))
    parser.add_argument("--model", default="bert-base")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-batch-delay", type=float, default=5.0)
    parser.add_argument("--max-queue", type=int, default=100)
    parser.add_argument(
        "--max-queue-wait", type=float, help="ms; the server's default: 2000 (0: not held)"
    )
    parser.add_argument("--probe-s", type=float, default=15.0)
    parser.add_argument("--capacity", type=float, help="req/s, instead of probing (flood)")
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--flood-s", type=float, default=60.0)
    parser.add_argument("--calm-s", type=float, default=30.0)
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--every-s", type=float, default=60.0)
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="packrat-robustness-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.output = args.output or REPO / "docs" / f"robustness-{args.mode}.md"
    return args


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args()
    command = "python benchmarks/robustness.py " + " ".join(os.sys.argv[1:])
    options = ["--max-batch-size", str(args.max_batch_size),
               "--max-batch-delay", f"{args.max_batch_delay:g}",
               "--max-queue", str(args.max_queue)]  # fmt: skip
    if args.max_queue_wait is not None:
        options += ["--max-queue-wait", f"{args.max_queue_wait:g}"]
    if args.profile is not None:
        options += ["--profile", str(args.profile)]
    log = args.workdir / f"packrat-{args.mode}.log"
    say(f"starting packrat serve {args.model} {' '.join(options)}; work directory {args.workdir}")
    with packrat_serve(args.model, options, args.workdir, log) as server:
        report = (flood if args.mode == "flood" else soak)(args, server.urls, command)
    report += (
        f"\nThe server stopped with exit status {server.exit_code}; processes left after it: "
        f"{len(server.leftover_pids)}.\n"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report + kept_analysis(args.output))
    say(f"wrote {args.output}; raw results in {args.workdir}")


if __name__ == "__main__":
    main()
