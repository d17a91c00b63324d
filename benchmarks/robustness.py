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
import datetime
import json
import math
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from packrat.bench.loadgen import (
    ClosedLoop,
    LoadOptions,
    LoadResult,
    Payload,
    PhaseSummary,
    Target,
    plot_timeline,
    run_load,
    steps,
    write_csv,
    write_json,
)
from packrat.bench.resources import parent_pid, shared_memory_entries, snapshot
from packrat.topology import read_topology

from harness.client import describe, payload_for, warm_up
from harness.report import cpu_model, kept_analysis, package_versions
from harness.serve import packrat_serve

REPO = Path(__file__).resolve().parents[1]
PSS_GROWTH_TARGET = 0.05
SETTLE_S = 5.0
RECOVERY_FACTOR = 1.5  # latency is "back" once a 2 s window's p50 is within this of before


@dataclass(frozen=True)
class Sample:
    """The server's process tree at `at_s` seconds into the load."""

    at_s: float
    processes: int
    rss_bytes: int
    pss_bytes: int
    fds: int


class Sampler:
    """Snapshots of a process tree every `period_s` seconds, in a thread, until stopped."""

    def __init__(self, pid: int, period_s: float = 1.0) -> None:
        self.samples: list[Sample] = []
        self._pid, self._period_s = pid, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = snapshot(self._pid)
            at_s = time.monotonic() - self._start
            self.samples.append(
                Sample(at_s, tree.processes, tree.rss_bytes, tree.pss_bytes, tree.fds)
            )
            self._stop.wait(self._period_s)


def say(text: str) -> None:
    print(f"[robustness] {text}", flush=True)


def server_pid(urls: dict[str, str], model: str) -> int:
    """The server process: the parent of its first instance."""
    pid = parent_pid(int(describe(urls, model)["instances"][0]["pid"]))
    if pid is None:
        raise SystemExit("cannot find the server process")
    return pid


def capacity_rps(target: Target, payload: Payload, clients: int, seconds: float) -> float:
    """Answers per second of a closed loop of `clients` for about `seconds`."""
    result = run_load(target, ClosedLoop(clients, duration_s=seconds), LoadOptions(payload))
    summary = result.summary().overall
    if summary.failures:
        raise SystemExit(f"capacity probe failed: {summary.failures}")
    return summary.throughput_rps


def mib(value: float) -> str:
    return f"{value / 2**20:.0f}"


def ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0f}"


def header(title: str, args: argparse.Namespace, command: str, capacity: float) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    cores = read_topology().num_cores
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# {title}",
        "",
        f"Measured {when} on {cpu_model()}, {cores} usable cores; {versions}.",
        "",
        f"Command: `{command}`",
        "",
        f"Server: `packrat serve {args.model} --max-batch-size {args.max_batch_size} "
        f"--max-batch-delay {args.max_batch_delay:g} --max-queue {args.max_queue}` (default "
        f"policy). Capacity, measured first (closed loop of {2 * args.max_batch_size} clients, "
        f"{args.probe_s:g} s): **{capacity:.1f} requests/s**.",
        "",
    ]


def memory_rows(samples: list[Sample], during: list[Sample]) -> list[str]:
    """Check rows: PSS and RSS of the tree at the start, the peak `during`, and the end."""
    rows = []
    for label, field in (("PSS", "pss_bytes"), ("RSS summed over the processes", "rss_bytes")):
        start, end = getattr(samples[0], field), getattr(samples[-1], field)
        peak = max((getattr(s, field) for s in during), default=start)
        target = "flat" if label == "PSS" else "-"
        rows.append(
            f"| {label} of the server and its workers: before / flood peak / after, MiB "
            f"| {target} | {mib(start)} / {mib(peak)} / {mib(end)} |"
        )
    return rows


def minute_medians(samples: list[Sample]) -> tuple[float, float]:
    """Median PSS of the samples in the first and in the last 60 s."""
    end_s = samples[-1].at_s
    first = [s.pss_bytes for s in samples if s.at_s <= samples[0].at_s + 60.0]
    last = [s.pss_bytes for s in samples if s.at_s >= end_s - 60.0]
    return statistics.median(first), statistics.median(last)


def phase_table(summaries: tuple[PhaseSummary, ...], result: LoadResult) -> list[str]:
    lines = [
        "| phase | sent | 200 | 503 | other failures | p50 / p99 of the 200s, ms "
        "| sent late, p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for summary in summaries:
        mine = [r for r in result.records if r.phase == summary.name]
        refused = sum(r.status == 503 for r in mine)
        other = sum(not r.ok and r.status != 503 for r in mine)
        stats = summary.latency
        latency = "-" if stats is None else f"{ms(stats.p50_ms)} / {ms(stats.p99_ms)}"
        lags = sorted(1000 * (r.sent_s - r.scheduled_s) for r in mine if r.sent_s is not None)
        lag = ms(lags[min(len(lags) - 1, int(0.99 * len(lags)))]) if lags else "-"
        lines.append(
            f"| {summary.name} | {summary.sent} | {summary.succeeded} | {refused} | {other} "
            f"| {latency} | {lag} |"
        )
    lines += [
        "",
        "Sent late: how long after its scheduled time the load generator sent a request "
        "(latency counts from the scheduled time); large values mean the load generator, on "
        "the same cores, could not keep up.",
    ]
    return lines


def recovery_s(result: LoadResult, flood_end_s: float, baseline_p50_ms: float) -> float | None:
    """Seconds after the flood's end until a 2 s window of answered requests has its p50
    within RECOVERY_FACTOR of `baseline_p50_ms`; None if it never does."""
    done = sorted(
        (r.scheduled_s, r.latency_ms)
        for r in result.records
        if r.ok and r.latency_ms is not None and r.scheduled_s >= flood_end_s
    )
    start, end_s = flood_end_s, result.phases[-1].end_s
    while start < end_s:
        window = sorted(lat for at, lat in done if start <= at < start + 2.0)
        if window and window[len(window) // 2] <= RECOVERY_FACTOR * baseline_p50_ms:
            return start - flood_end_s
        start += 0.5
    return None


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
