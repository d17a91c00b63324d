"""Closed loops of clients against freshly started servers: does admission refuse an ordinary
queue (issue 16)?

    python benchmarks/admission.py [--models resnet50,bert-base] [--clients 16,50,100]
        [--seconds 30] [--variant NAME=OPTIONS ...] [--workdir DIR] [--output PATH]

(with the project's venv active; HF_HUB_OFFLINE=1 is set for the servers). For each model and
each client count N (none above --max-queue, 100: a closed loop of N clients never has more than
N requests waiting), every variant runs in turn, in an order rotated at each N so that none
always goes first while the machine drifts. A run is: a fresh `packrat serve MODEL
--max-batch-size 8 --max-batch-delay 5 OPTIONS` (its profile cached in WORKDIR/cache, so only
the first start profiles), then at once, with no warm-up, a closed loop of N clients for
--seconds (each client sends its next request when its last is answered, 503 included), then
the server is stopped. A fresh server's first seconds are what this measures: before batches of
every size have run, admission knows their times only by estimate.

Variants (default): `default` (no options) and `wait-2000` (`--max-queue-wait 2000`, the
default until 2026-12-02). A variant's options may start with environment assignments, as in a
shell (`before=PYTHONPATH=/tmp/old/src`: the server runs the code checked out there).

Reports requests, 200s, 503s, other failures, answers per second, p50 and p99 of the 200s, and
the first 503's message, per run; writes docs/admission.md (the hand-written analysis after the
marker line of an existing file is kept), and the requests of each run (CSV) and the servers'
logs into the work directory. A run takes its start (10 to 30 s) plus --seconds, plus the
first start's profiling (1 to 4 minutes per model on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packrat.bench.loadgen import ClosedLoop, LoadOptions, Target, run_load, write_csv
from packrat.topology import read_topology

from harness.client import describe, payload_for
from harness.report import cpu_model, kept_analysis, package_versions
from harness.serve import packrat_serve

REPO = Path(__file__).resolve().parents[1]
MAX_QUEUE = 100  # the server's default --max-queue
DEFAULT_VARIANTS = ("default=", "wait-2000=--max-queue-wait 2000")


@dataclass(frozen=True)
class Run:
    model: str
    clients: int
    variant: str
    requests: int
    ok: int
    refused: int
    other: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    first_refusal: str


def say(text: str) -> None:
    print(f"[admission] {text}", flush=True)


@contextlib.contextmanager
def environment(assignments: dict[str, str]) -> Iterator[None]:
    """os.environ with `assignments` (which the server started inside inherits), restored."""
    saved = {key: os.environ.get(key) for key in assignments}
    os.environ.update(assignments)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def split_variant(options: str) -> tuple[dict[str, str], list[str]]:
    """Leading NAME=VALUE tokens (the server's environment), then its options."""
    tokens = shlex.split(options)
    env: dict[str, str] = {}
    while tokens and "=" in tokens[0] and not tokens[0].startswith("-"):
        key, _, value = tokens.pop(0).partition("=")
        env[key] = value
    return env, tokens


def run_one(args: argparse.Namespace, model: str, clients: int, name: str, options: str) -> Run:
    tag = f"{model}-{clients}-{name}"
    env, extra = split_variant(options)
    server_options = ["--max-batch-size", "8", "--max-batch-delay", "5", *extra]
    log = args.workdir / f"{tag}.log"
    say(f"{tag}: packrat serve {model} {' '.join(server_options)} {env or ''}")
    with environment(env), packrat_serve(model, server_options, args.workdir, log) as server:
        urls = server.urls
        payload = payload_for(describe(urls, model))
        schedule = ClosedLoop(clients, duration_s=args.seconds)
        result = run_load(Target(urls["inference"], model), schedule, LoadOptions(payload, 120.0))
    write_csv(result.records, args.workdir / f"{tag}.csv")
    overall = result.summary().overall
    refused = [r for r in result.records if r.status == 503]
    other = sum(not r.ok and r.status != 503 for r in result.records)
    latency = overall.latency
    run = Run(
        model=model,
        clients=clients,
        variant=name,
        requests=len(result.records),
        ok=sum(r.ok for r in result.records),
        refused=len(refused),
        other=other,
        rps=overall.throughput_rps,
        p50_ms=latency.p50_ms if latency else None,
        p99_ms=latency.p99_ms if latency else None,
        first_refusal=refused[0].detail if refused else "",
    )
    say(f"{tag}: {run.ok} answered, {run.refused} refused, {run.other} other failures")
    return run


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def report(args: argparse.Namespace, runs: list[Run], variants: list[tuple[str, str]]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    started = args.started.strftime("%Y-%m-%d %H:%M UTC")
    cores = len(read_topology().cpu_ids())
    lines = [
        "# Admission: closed loops of clients against freshly started servers (issue 16)",
        "",
        f"Measured {started} on {cpu_model()}, {cores} usable cores; {versions}.",
        "",
        f"Command: `python benchmarks/admission.py {' '.join(sys.argv[1:])}`",
        "",
        f"Each run: a fresh `packrat serve MODEL --max-batch-size 8 --max-batch-delay 5` (plus "
        f"the variant's options; `--max-queue` {MAX_QUEUE}), then at once a closed loop of N "
        f"clients for {args.seconds:g} s, raw tensors to the TorchServe API. Variants: "
        + "; ".join(f"`{n}`: `{o or '(none)'}`" for n, o in variants)
        + ". Runs of one model and N follow each other, in an order rotated at each N.",
        "",
        "| model | clients | variant | requests | 200 | 503 | other | answers/s | p50 ms "
        "| p99 ms | first 503 |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r.model} | {r.clients} | {r.variant} | {r.requests} | {r.ok} | {r.refused} "
            f"| {r.other} | {r.rps:.1f} | {ms(r.p50_ms)} | {ms(r.p99_ms)} | "
            f"{r.first_refusal[:120] or '-'} |"
        )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,bert-base")
    parser.add_argument("--clients", default="16,50,100")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--variant", action="append", help="NAME=SERVER OPTIONS")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "admission.md")
    args = parser.parse_args()
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="packrat-admission-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.started = datetime.datetime.now(datetime.UTC)
    return args


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args()
    variants = [tuple(v.split("=", 1)) for v in (args.variant or DEFAULT_VARIANTS)]
    clients = [int(c) for c in args.clients.split(",")]
    if max(clients) > MAX_QUEUE:
        raise SystemExit(f"--clients above the server's --max-queue ({MAX_QUEUE}) must be refused")
    runs: list[Run] = []
    for model in args.models.split(","):
        for i, n in enumerate(clients):
            order = variants[i % len(variants) :] + variants[: i % len(variants)]
            runs += [run_one(args, model, n, name, options) for name, options in order]
    args.output.write_text(report(args, runs, variants) + kept_analysis(args.output))
    say(f"wrote {args.output}; logs and requests in {args.workdir}")


if __name__ == "__main__":
    main()
