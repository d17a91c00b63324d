"""The parts of benchmarks/robustness.py's reports (Markdown): the header, the memory check
rows and the table of each phase's answers."""

from __future__ import annotations

import argparse
import datetime
import math

from packrat.bench.loadgen import LoadResult, PhaseSummary
from packrat.topology import read_topology

from harness.report import cpu_model, package_versions
from harness.robustness.measure import Sample


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
