"""Plans switching under a stepped load (issue 4), against fixed plans.

    python benchmarks/reconfigure.py [--model bert-base] [--rates 2,7,2] [--phase-s 40]
        [--max-batch-size 8] [--max-batch-delay 5] [--seed 0] [--settle-s 5] [--window-s 5]
        [--servers auto,follow,fat,plan,fixed] [--profile FILE] [--output docs/reconfigure.md]
        [--workdir DIR]

(with the project's venv active; HF_HUB_OFFLINE=1 is set for the servers).

One stepped open-loop schedule, Poisson arrivals at each of --rates for --phase-s seconds
(seeded: the same arrival times for every server), is sent to `packrat serve MODEL` servers
started one after another, each warmed up the same way first (closed loops of 1, 2, 4, ... up
to --max-batch-size clients):

- `--policy auto` (each batch on the optimal plan for its own size) and `--policy follow` (the
  paper's batch-size estimator): their plans follow the load;
- fixed plans: `--fat`, `--plan '<T,1,ceil(B/T)>'` (T single-thread instances, T the usable
  cores) and `--policy fixed` (the optimal plan for --max-batch-size), skipped when the
  management API says it runs the same instances as one of the two.

For every server: requests sent, failures, p50/p99 per phase. For auto and follow also their
switches (GET /models/{name}/switches: count, duration, workers started; counted again from
/metrics), p50/p99 before, during and after each switch (windows of --window-s seconds;
`packrat.bench.loadgen.switches`), requests in flight during any switch against the steady
ones, and per load level their p50 and p99 over the best fixed server's (the lowest p50 in that
phase), leaving out the first --settle-s seconds of each phase. Latency counts from each
request's scheduled send time.

Writes the report as Markdown (default docs/reconfigure.md; the hand-written analysis after
the `<!-- analysis: ... -->` marker line of an existing file is kept) and the latency
timelines of auto and follow next to it (reconfigure-auto.png, reconfigure-follow.png). The
work directory gets each server's log, its requests (loadgen JSON and CSV), its switches and
descriptions (SERVER-server.json), its timeline and session.json (the command and its
options); without --workdir it is a new temp directory, kept (its model cache removed) and
named at the end. `--render-only --workdir DIR` writes the report again from what DIR holds,
running nothing (--settle-s and --window-s may differ from the run's). Every server is stopped
(SIGTERM, drained) and checked to leave no process behind.

With the defaults on 2 cores it takes about 12 minutes: 4 servers, each 2 minutes of load
plus about 20 s to start, warm up and stop, and a fifth started only to be skipped when
--policy fixed runs the plan of another; the first run in a work directory also profiles the
model before the first server answers (bert-base: 1 to 3 minutes; the profile is cached in
WORKDIR/cache and --profile FILE skips it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serving import (
    PhaseProgress,
    cpu_model,
    describe,
    kept_analysis,
    metric,
    package_versions,
    packrat_serve,
    payload_for,
    scrape,
    warm_up,
)

from packrat.bench.loadgen import (
    AroundSwitch,
    LatencyStats,
    LoadOptions,
    LoadResult,
    OpenLoop,
    PhaseSummary,
    RequestRecord,
    RequestSet,
    SwitchImpact,
    SwitchSpan,
    Target,
    around_switches,
    in_flight_during_any,
    plot_timeline,
    read_json,
    run_load,
    steps,
    switch_impact,
    write_csv,
    write_json,
)
from packrat.topology import read_topology

REPO = Path(__file__).resolve().parents[1]
SERVERS = ("auto", "follow", "fat", "plan", "fixed")
SERVER_START_TIMEOUT_S = 900.0
LEVEL_TOLERANCE = 1.10  # each load level within 10% of the best fixed plan
SWITCH_TARGET_MS = 1000.0
DURING_P99_TARGET = 1.5  # p99 in flight during switches over steady p99
LABELLED_SWITCHES = 12  # more switches than this (or closer than LABEL_GAP) are drawn as a rug
LABEL_GAP = 0.04  # of the run's duration
LISTED_SWITCHES = 20  # more than this: the report lists a selection, the JSON has all


@dataclass(frozen=True)
class Server:
    """One server to run the schedule against: its name in the report and its options."""

    name: str
    options: tuple[str, ...]
    follows_load: bool

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-")


@dataclass
class Session:
    """A benchmark run as a whole: its command, when, and what it found worth a note."""

    command: str
    measured: str
    notes: list[str] = field(default_factory=list)


@dataclass
class ServerRun:
    """What one server did with the schedule."""

    server: Server
    described: dict[str, Any]  # GET /models/{name}, after the warm-up
    result: LoadResult
    switches: list[dict[str, Any]]  # GET /models/{name}/switches, those during the schedule
    switches_counted: int  # the description's switches_total, increase over the schedule
    switches_in_metrics: float  # packrat_reconfigurations_total, increase over the schedule
    exit_code: int | None = None
    leftover_pids: list[int] = field(default_factory=list)

    @property
    def spans(self) -> list[SwitchSpan]:
        start = self.result.start_unix_s
        return [
            SwitchSpan.from_unix(s["at_unix_s"], s["took_ms"] / 1000.0, start)
            for s in self.switches
        ]

    def failed(self) -> int:
        return self.result.summary().overall.failed


# --- running the servers ----------------------------------------------------------------------


def say(name: str, text: str) -> None:
    print(f"[{name}] {text}", flush=True)


def run_server(
    server: Server,
    args: argparse.Namespace,
    schedule: OpenLoop,
    fixed_layouts: dict[str, Any],
    notes: list[str],
) -> ServerRun | None:
    """Start `server`, warm it up, send it the schedule, collect its switches, stop it. None if
    it runs the same instances as a fixed server already measured (`fixed_layouts`: server
    name -> instances; a fixed server adds its own). What does not add up goes to `notes`."""
    model = args.model
    options = [*common_options(args), *server.options]
    say(server.name, f"starting packrat serve {model} {' '.join(options)}")
    log = args.workdir / f"packrat-{server.slug}.log"
    run = None
    # The first server may profile the model before it answers: minutes for bert-base.
    with packrat_serve(model, options, args.workdir, log, SERVER_START_TIMEOUT_S) as process:
        urls = process.urls
        described = describe(urls, model)
        layout = [(i["threads"], i["cores"]) for i in described["instances"]]
        plan = described["plan"]["describe"]
        same = [name for name, seen in fixed_layouts.items() if seen == layout]
        if server.follows_load or not same:
            if not server.follows_load:
                fixed_layouts[server.name] = layout
            say(server.name, f"ready, plan {plan}, policy {described['policy']}; warming up")
            run = load(server, urls, args, schedule)
        else:
            say(server.name, f"runs {plan} on the instances of {same[0]}: skipped")
            notes.append(f"`{server.name}` runs `{plan}` on the instances of `{same[0]}`: skipped.")
    name = server.name
    if process.exit_code != 0:
        notes.append(f"`{name}`: exit status {process.exit_code} after SIGTERM (expected 0).")
    if process.leftover_pids:
        notes.append(f"`{name}`: processes {process.leftover_pids} outlived the server (killed).")
    say(name, f"stopped: exit status {process.exit_code}, {len(process.leftover_pids)} left")
    if run is not None:
        run.exit_code, run.leftover_pids = process.exit_code, process.leftover_pids
        notes.extend(discrepancies(run))
    return run


def load(
    server: Server, urls: dict[str, str], args: argparse.Namespace, schedule: OpenLoop
) -> ServerRun:
    """Warm the server up, send it the schedule, and collect what it switched meanwhile."""
    model = args.model
    target = Target(urls["inference"], model)
    payload = payload_for(describe(urls, model))
    warm_up(target, payload, args.max_batch_size)
    described = describe(urls, model)
    before = scrape(urls["metrics"] + "/metrics")
    say(server.name, f"{schedule.num_requests} requests in {schedule.duration_s:g} s")
    progress = PhaseProgress(server.name, schedule.phases)
    result = run_load(target, schedule, LoadOptions(payload, args.timeout_s), progress=progress)
    logged = httpx.get(f"{urls['management']}/models/{model}/switches", timeout=30).json()
    after = scrape(urls["metrics"] + "/metrics")
    counted = describe(urls, model)["switches_total"] - described["switches_total"]
    label = f'model="{model}"'
    in_metrics = metric(after, "packrat_reconfigurations_total", label) - metric(
        before, "packrat_reconfigurations_total", label
    )
    during = [s for s in logged if s["at_unix_s"] >= result.start_unix_s]
    run = ServerRun(server, described, result, during, counted, in_metrics)
    say(
        server.name,
        f"done: {run.failed()} of {len(result.records)} failed, {len(during)} switches",
    )
    return run


def common_options(args: argparse.Namespace) -> list[str]:
    options = ["--max-batch-size", str(args.max_batch_size),
               "--max-batch-delay", f"{args.max_batch_delay:g}"]  # fmt: skip
    if args.profile is not None:
        options += ["--profile", str(args.profile)]
    return options


def servers(names: Sequence[str], max_batch_size: int) -> list[Server]:
    """The servers named, in the order of SERVERS (auto first: it profiles the model if its
    profile is not cached yet, and every later server reuses it)."""
    unknown = set(names) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown servers {sorted(unknown)}: choose from {', '.join(SERVERS)}")
    cores = read_topology().num_cores
    per_instance = math.ceil(max_batch_size / cores)
    plan = f"<{cores},1,{per_instance}>"
    known = {
        "auto": Server("auto", ("--policy", "auto"), True),
        "follow": Server("follow", ("--policy", "follow"), True),
        "fat": Server("fat", ("--fat",), False),
        "plan": Server(f"plan {plan}", ("--plan", plan), False),
        "fixed": Server("fixed", ("--policy", "fixed"), False),
    }
    return [known[name] for name in SERVERS if name in names]


def save(run: ServerRun, args: argparse.Namespace) -> None:
    """The run's requests, switches and descriptions, in the work directory."""
    stem = args.workdir / run.server.slug
    write_json(run.result, stem.with_suffix(".json"))
    write_csv(run.result.records, stem.with_suffix(".csv"))
    raw = {
        "server": run.server.name,
        "options": [*common_options(args), *run.server.options],
        "described": run.described,
        "switches": run.switches,
        "switches_counted": run.switches_counted,
        "switches_in_metrics": run.switches_in_metrics,
        "around_switches": [asdict(a) for a in around(run, args.window_s)],
        "exit_code": run.exit_code,
        "leftover_pids": run.leftover_pids,
    }
    Path(f"{stem}-server.json").write_text(json.dumps(raw, indent=1))


def draw_timeline(run: ServerRun, args: argparse.Namespace) -> None:
    """The run's latency timeline with its switches marked: next to the report for the
    servers that switch, in the work directory for the others."""
    if run.server.follows_load:
        png = timeline_path(args.output, run)
    else:
        png = args.workdir / f"{run.server.slug}.png"
    spans = run.spans
    title = (
        f"{args.model}, {run.server.name}: latency per request, {len(spans)} switches "
        f"(phases dotted)"
    )
    starts = sorted(span.start_s for span in spans)
    gaps = np.diff(starts) if len(starts) > 1 else np.array([math.inf])
    # Labels need room: a few switches, far enough apart that their labels do not overlap.
    if len(spans) <= LABELLED_SWITCHES and gaps.min() >= LABEL_GAP * run.result.phases[-1].end_s:
        markers = [(span.start_s, s["to"]) for span, s in zip(spans, run.switches, strict=True)]
        plot_timeline(run.result, png, markers=markers, title=title)
    else:
        rug = [span.start_s for span in spans]
        plot_timeline(run.result, png, title=title, rug=rug, rug_label="switches")


def timeline_path(output: Path, run: ServerRun) -> Path:
    return output.with_name(f"{output.stem}-{run.server.slug}.png")


# --- analysis ---------------------------------------------------------------------------------


def around(run: ServerRun, window_s: float) -> list[AroundSwitch]:
    return around_switches(run.result.records, run.spans, window_s)


def settled(result: LoadResult, settle_s: float) -> list[PhaseSummary]:
    """Each phase without its first `settle_s` seconds (requests scheduled after that)."""
    summaries = []
    for phase in result.phases:
        from_s = min(phase.start_s + settle_s, phase.end_s)
        records = [r for r in result.records if r.phase == phase.name and r.scheduled_s >= from_s]
        summaries.append(PhaseSummary.of(phase.name, phase.end_s - from_s, records))
    return summaries


def impact_per_phase(run: ServerRun) -> list[tuple[str, SwitchImpact]]:
    """In flight during a switch against steady: over the whole run, then in each phase."""
    records, spans = run.result.records, run.spans
    rows = [("all", switch_impact(records, spans))]
    for phase in run.result.phases:
        mine = [r for r in records if r.phase == phase.name]
        rows.append((phase.name, switch_impact(mine, spans)))
    return rows


def best_fixed(fixed: Sequence[ServerRun]) -> ServerRun | None:
    """The fixed server with the lowest p50 over the whole run."""
    scored = [(run.result.summary().overall.latency, run) for run in fixed]
    ranked = [(stats.p50_ms, k, run) for k, (stats, run) in enumerate(scored) if stats is not None]
    return min(ranked)[2] if ranked else None


def same_requests(records: Sequence[RequestRecord], reference: ServerRun) -> list[RequestRecord]:
    """`reference`'s records of the requests scheduled at the same times as `records` (every
    server gets the same seeded schedule)."""
    wanted = {r.scheduled_s for r in records}
    return [r for r in reference.result.records if r.scheduled_s in wanted]


def counterfactual_per_phase(
    run: ServerRun, reference: ServerRun
) -> list[tuple[str, RequestSet, RequestSet]]:
    """Per phase (first "all"): the requests in flight during a switch, and the same requests
    on `reference`, a server that never switched. Comparing the two isolates what switching
    cost them: the requests around a switch come in the bursts that made it, so they are
    slower than the steady ones on any server."""
    mask = in_flight_during_any(run.result.records, run.spans)
    during = [r for r, hit in zip(run.result.records, mask, strict=True) if hit]
    rows = [("all", RequestSet.of(during), RequestSet.of(same_requests(during, reference)))]
    for phase in run.result.phases:
        mine = [r for r in during if r.phase == phase.name]
        rows.append(
            (phase.name, RequestSet.of(mine), RequestSet.of(same_requests(mine, reference)))
        )
    return rows


def _p99_ratio(mine: RequestSet, theirs: RequestSet) -> float:
    return mine.p99_ms / theirs.p99_ms if theirs.p99_ms > 0 else math.nan


@dataclass(frozen=True)
class LevelComparison:
    """One phase, settled: a policy's latency against the best fixed server's."""

    phase: str
    best: str
    best_p50_ms: float
    best_p99_ms: float
    p50_ms: float
    p99_ms: float

    @property
    def p50_ratio(self) -> float:
        return self.p50_ms / self.best_p50_ms

    @property
    def p99_ratio(self) -> float:
        return self.p99_ms / self.best_p99_ms

    @property
    def within(self) -> bool:
        return self.p50_ratio <= LEVEL_TOLERANCE and self.p99_ratio <= LEVEL_TOLERANCE


def compare_levels(
    policy: ServerRun, fixed: Sequence[ServerRun], settle_s: float
) -> list[LevelComparison]:
    """Per phase (settled), `policy`'s latency against the fixed server with the lowest p50."""
    theirs = {run.server.name: settled(run.result, settle_s) for run in fixed}
    rows = []
    for k, phase in enumerate(settled(policy.result, settle_s)):
        best: tuple[LatencyStats, str] | None = None
        for name, summaries in theirs.items():
            stats = summaries[k].latency
            if stats is not None and (best is None or stats.p50_ms < best[0].p50_ms):
                best = (stats, name)
        if phase.latency is None or best is None:
            continue
        stats, name = best
        rows.append(
            LevelComparison(
                phase.name,
                name,
                stats.p50_ms,
                stats.p99_ms,
                phase.latency.p50_ms,
                phase.latency.p99_ms,
            )
        )
    return rows


# --- the report -------------------------------------------------------------------------------


def render(runs: list[ServerRun], args: argparse.Namespace, session: Session) -> str:
    first = runs[0].result
    requests = len(first.records)
    policies = [run for run in runs if run.server.follows_load]
    fixed = [run for run in runs if not run.server.follows_load]
    spec = runs[0].described.get("input_spec") or {}
    rates = ", ".join(p.name for p in first.phases)
    out = [
        "# Plans switching under a stepped load (issue 4)",
        "",
        f"Measured {session.measured} on "
        f"{platform.node() or 'this machine'}: {cpu_model()}, "
        f"{len(os.sched_getaffinity(0))} usable cores, Linux {platform.release()}; "
        + ", ".join(f"{k} {v}" for k, v in package_versions().items())
        + ".",
        "",
        f"Command: `{session.command}`",
        "",
        f"Load: open-loop Poisson arrivals in {len(first.phases)} phases of {args.phase_s:g} s "
        f"({rates}), seed {args.seed}: the same {requests} arrival times for every server. "
        f"Each request is a random {spec.get('dtype')} tensor of shape {spec.get('shape')} "
        "posted raw to the TorchServe API; its latency counts from its scheduled send time. "
        f"Servers: `packrat serve {args.model} {' '.join(common_options(args))}` plus the "
        "options below, started one after another on this machine, each warmed up the same way "
        f"first (closed loops of 1, 2, 4, ... {args.max_batch_size} clients).",
        "",
        *_checks(runs, policies, fixed, args),
        *_servers_table(runs),
        *_phases_table(runs),
        *_compute_table(runs),
        *_levels(policies, fixed, args.settle_s),
    ]
    for run in policies:
        out += _switches(run, fixed, args)
    if session.notes:
        out += ["## Notes from the runs", "", *(f"- {note}" for note in session.notes), ""]
    return "\n".join(out)


def _checks(
    runs: list[ServerRun],
    policies: list[ServerRun],
    fixed: list[ServerRun],
    args: argparse.Namespace,
) -> list[str]:
    failed = sum(run.failed() for run in runs)
    requests = sum(len(run.result.records) for run in runs)
    lines = [
        "## Checks",
        "",
        "| check | target | result |",
        "| --- | --- | --- |",
        f"| failed requests, all servers | 0 | {failed} of {requests}: {_verdict(failed == 0)} |",
    ]
    reference = best_fixed(fixed)
    for run in policies:
        took = [s["took_ms"] for s in run.switches]
        longest = max(took, default=0.0)
        impacts = impact_per_phase(run)
        ratios = [impact.p99_ratio for _, impact in impacts[1:]]
        judged = [ratio for ratio in ratios if not math.isnan(ratio)]
        calm = all(ratio <= DURING_P99_TARGET for ratio in judged) if judged else None
        ratio_text = ", ".join(_ratio(ratio) for ratio in ratios)
        whole = _ratio(impacts[0][1].p99_ratio)
        levels = compare_levels(run, fixed, args.settle_s)
        met = sum(level.within for level in levels)
        name = run.server.name
        lines += [
            f"| {name}: longest of {len(took)} switches | <= {SWITCH_TARGET_MS:.0f} ms "
            f"| {longest:.2f} ms: {_verdict(longest <= SWITCH_TARGET_MS if took else None)} |",
            f"| {name}: p99 in flight during a switch / steady p99, in each phase "
            f"| <= {DURING_P99_TARGET}x | {ratio_text} (whole run {whole})"
            f": {_verdict(calm)} |",
            *_counterfactual_check(run, reference),
            f"| {name}: load levels within {LEVEL_TOLERANCE - 1:.0%} of the best fixed plan "
            f"(p50 and p99) | all {len(levels)} | {met} of {len(levels)}: "
            f"{_verdict(met == len(levels) if levels else None)} |",
        ]
    return [*lines, ""]


def _counterfactual_check(run: ServerRun, reference: ServerRun | None) -> list[str]:
    if reference is None or not run.spans:
        return []
    rows = counterfactual_per_phase(run, reference)
    ratios = [_p99_ratio(mine, theirs) for _, mine, theirs in rows[1:]]
    judged = [ratio for ratio in ratios if not math.isnan(ratio)]
    calm = all(ratio <= DURING_P99_TARGET for ratio in judged) if judged else None
    whole = _ratio(_p99_ratio(rows[0][1], rows[0][2]))
    return [
        f"| {run.server.name}: p99 of the requests in flight during a switch / p99 of the same "
        f"requests on {reference.server.name} (never switches), in each phase "
        f"| <= {DURING_P99_TARGET}x | {', '.join(_ratio(r) for r in ratios)} (whole run {whole})"
        f": {_verdict(calm)} |"
    ]


def _servers_table(runs: list[ServerRun]) -> list[str]:
    lines = [
        "## Servers",
        "",
        "| server | options | plans run | sent | failed | switches (API / counter / metrics) "
        "| switch took, ms: p50 / p99 / max | workers started | exit status | processes left |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        overall = run.result.summary().overall
        took = [s["took_ms"] for s in run.switches]
        first = run.described["plan"]["describe"]
        plans = dict.fromkeys([first, *(s["to"] for s in run.switches)])
        took_text = "-"
        if took:
            p50, p99 = np.percentile(took, [50, 99])
            took_text = f"{p50:.2f} / {p99:.2f} / {max(took):.2f}"
        started = sum(s["workers_started"] for s in run.switches)
        counts = f"{len(run.switches)} / {run.switches_counted} / {run.switches_in_metrics:.0f}"
        lines.append(
            f"| {run.server.name} | `{' '.join(run.server.options)}` | {_plans(plans)} "
            f"| {overall.sent} | {overall.failed} | {counts} | {took_text} | {started} "
            f"| {run.exit_code} | {len(run.leftover_pids)} |"
        )
    lines += [
        "",
        "Plans run: the plan after the warm-up, then each other plan switched to. Switches: "
        "those during the schedule, from `GET /models/{name}/switches`, from the increase of the "
        "description's `switches_total`, and from `packrat_reconfigurations_total`.",
        "",
    ]
    return lines


def _phases_table(runs: list[ServerRun]) -> list[str]:
    phases = runs[0].result.phases
    head = " | ".join(f"{p.name}: p50 / p99" for p in phases)
    lines = [
        "## Latency per phase (ms, whole phases)",
        "",
        f"| server | {head} | all: p50 / p99 |",
        "| --- |" + " ---: |" * (len(phases) + 1),
    ]
    for run in runs:
        summary = run.result.summary()
        cells = [_p50_p99(s) for s in (*summary.phases, summary.overall)]
        lines.append(f"| {run.server.name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _compute_table(runs: list[ServerRun]) -> list[str]:
    phases = runs[0].result.phases
    lines = [
        "## Time in the worker per request (ms, p50 and p90 per phase)",
        "",
        "The worker's own time for the sub-batch each request ran in (the response's "
        "`Server-Timing: compute`): what the model took, queueing and HTTP left out.",
        "",
        "| server | " + " | ".join(p.name for p in phases) + " |",
        "| --- |" + " ---: |" * len(phases),
    ]
    for run in runs:
        cells = []
        for phase in phases:
            mine = [r for r in run.result.records if r.phase == phase.name and r.ok]
            computed = [r.compute_ms for r in mine if r.compute_ms is not None]
            if computed:
                p50, p90 = np.percentile(computed, [50, 90])
                cells.append(f"{_ms(p50)} / {_ms(p90)}")
            else:
                cells.append("-")
        lines.append(f"| {run.server.name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _levels(policies: list[ServerRun], fixed: list[ServerRun], settle_s: float) -> list[str]:
    lines = [
        f"## Each load level against the best fixed plan (first {settle_s:g} s of each phase "
        "left out)",
        "",
        "Best fixed plan: the fixed server with the lowest p50 in that phase. Ratios are the "
        f"policy's over the best's; within {LEVEL_TOLERANCE - 1:.0%} means both ratios "
        f"<= {LEVEL_TOLERANCE:.2f}.",
        "",
        "| phase | best fixed | its p50 / p99, ms | policy | p50 / p99, ms | p50 ratio "
        f"| p99 ratio | within {LEVEL_TOLERANCE - 1:.0%} |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for run in policies:
        for level in compare_levels(run, fixed, settle_s):
            lines.append(
                f"| {level.phase} | {level.best} | {_ms(level.best_p50_ms)} / "
                f"{_ms(level.best_p99_ms)} | {run.server.name} | {_ms(level.p50_ms)} / "
                f"{_ms(level.p99_ms)} | {level.p50_ratio:.2f} | {level.p99_ratio:.2f} "
                f"| {_verdict(level.within)} |"
            )
    return [*lines, ""]


def _switches(run: ServerRun, fixed: list[ServerRun], args: argparse.Namespace) -> list[str]:
    name = run.server.name
    lines = [
        f"## Switches of {name}",
        "",
        f"![{name}: latency per request, switches marked]({timeline_path(args.output, run).name})",
        "",
        "Requests in flight at any moment of a switch (from the request's scheduled time to its "
        "reply), against the rest (steady):",
        "",
        "| requests | switches begun | during a switch: n / p50 / p99, ms "
        "| steady: n / p50 / p99, ms | p99 ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    begun = [_phase_at(run.result, span.start_s) for span in run.spans]
    for what, impact in impact_per_phase(run):
        count = len(begun) if what == "all" else begun.count(what)
        lines.append(
            f"| {what} | {count} | {_n_p50_p99(impact.during)} | {_n_p50_p99(impact.steady)} "
            f"| {_ratio(impact.p99_ratio)} |"
        )
    reference = best_fixed(fixed)
    if reference is not None and run.spans:
        lines += [
            "",
            "The same requests on the fixed server with the lowest p50 "
            f"({reference.server.name}), which never switches: the requests around a switch "
            "come in the burst that made it, so they are slower than the steady ones on any "
            "server; this comparison isolates what the switch cost them.",
            "",
            f"| requests | during a switch, {run.server.name}: n / p50 / p99, ms "
            f"| the same on {reference.server.name}: n / p50 / p99, ms | p99 ratio |",
            "| --- | ---: | ---: | ---: |",
        ]
        for what, mine, theirs in counterfactual_per_phase(run, reference):
            lines.append(
                f"| {what} | {_n_p50_p99(mine)} | {_n_p50_p99(theirs)} "
                f"| {_ratio(_p99_ratio(mine, theirs))} |"
            )
    arounds = around(run, args.window_s)
    shown = _selected(run, arounds)
    lines += [
        "",
        f"Each switch: before = requests that finished in the {args.window_s:g} s before it, "
        f"during = in flight at any moment of it, after = scheduled in the {args.window_s:g} s "
        "after it (n / p50 / p99, ms; a window may hold other switches).",
    ]
    if len(shown) < len(arounds):
        lines.append(
            f"{len(arounds)} switches; listed: the first of each phase and the "
            f"{LISTED_SWITCHES // 2} with the highest p99 during. All of them are in "
            f"`{run.server.slug}-server.json` in the work directory."
        )
    lines += [
        "",
        "| at, s | phase | from -> to | reason | took, ms | workers started | before | during "
        "| after |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in shown:
        s, a = run.switches[k], arounds[k]
        lines.append(
            f"| {a.span.start_s:.2f} | {_phase_at(run.result, a.span.start_s)} "
            f"| {_plans([s['from']])} -> {_plans([s['to']])} | {s['reason']} | {s['took_ms']:.2f} "
            f"| {s['workers_started']} | {_n_p50_p99(a.before)} | {_n_p50_p99(a.during)} "
            f"| {_n_p50_p99(a.after)} |"
        )
    return [*lines, ""]


def _selected(run: ServerRun, arounds: list[AroundSwitch]) -> list[int]:
    """Indices of the switches to list: all if few, else the first of each phase and the
    ones with the highest p99 during, in time order."""
    if len(arounds) <= LISTED_SWITCHES:
        return list(range(len(arounds)))
    chosen = set()
    for phase in run.result.phases:
        first = next((k for k, a in enumerate(arounds) if a.span.start_s >= phase.start_s), None)
        if first is not None:
            chosen.add(first)
    worst = sorted(range(len(arounds)), key=lambda k: -_finite_or(arounds[k].during.p99_ms))
    chosen.update(worst[: LISTED_SWITCHES // 2])
    return sorted(chosen)


def _plans(plans: Iterable[str]) -> str:
    return ", ".join(f"`{plan}`" for plan in plans)


def _phase_at(result: LoadResult, at_s: float) -> str:
    return next((p.name for p in reversed(result.phases) if p.start_s <= at_s), "-")


def _p50_p99(summary: PhaseSummary) -> str:
    lat = summary.latency
    return "-" if lat is None else f"{_ms(lat.p50_ms)} / {_ms(lat.p99_ms)}"


def _n_p50_p99(requests: RequestSet) -> str:
    lat = requests.latency
    failed = f" ({requests.failed} failed)" if requests.failed else ""
    if lat is None:
        return f"{requests.requests}{failed}"
    return f"{requests.requests} / {_ms(lat.p50_ms)} / {_ms(lat.p99_ms)}{failed}"


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _verdict(met: bool | None) -> str:
    """None: nothing to judge."""
    if met is None:
        return "n/a"
    return "met" if met else "**missed**"


def _finite_or(value: float, default: float = -math.inf) -> float:
    return value if math.isfinite(value) else default


# --- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bert-base")
    parser.add_argument("--rates", default="2,7,2", help="req/s of each phase, e.g. 2,7,2")
    parser.add_argument("--phase-s", type=float, default=40.0, help="seconds of each phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-batch-delay", type=float, default=5.0, help="ms")
    parser.add_argument(
        "--settle-s", type=float, default=5.0, help="left out of each phase's comparison"
    )
    parser.add_argument("--window-s", type=float, default=5.0, help="before and after a switch")
    parser.add_argument("--servers", default=",".join(SERVERS), help="which, comma-separated")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per request")
    parser.add_argument("--profile", type=Path, help="profile file for every server")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "reconfigure.md")
    parser.add_argument("--workdir", type=Path, help="logs and raw results (default: temp)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="write the report from the runs saved in --workdir, running nothing",
    )
    args = parser.parse_args()
    try:
        args.rate_list = [float(rate) for rate in args.rates.split(",")]
    except ValueError:
        parser.error(f"--rates takes numbers separated by commas, got {args.rates!r}")
    if not 0 <= args.settle_s < args.phase_s:
        parser.error(f"--settle-s must be >= 0 and less than --phase-s ({args.phase_s:g})")
    return args


def main() -> None:
    args = parse_args()
    chosen = servers([p for p in args.servers.split(",") if p], args.max_batch_size)
    if args.render_only:
        runs, session = load_saved(chosen, args)
    else:
        runs, session = run_all(chosen, args)
    for run in runs:
        draw_timeline(run, args)
    report = render(runs, args, session)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report + kept_analysis(args.output))
    print(f"wrote {args.output}; raw results and server logs in {args.workdir}")


RUN_OPTIONS = ("model", "rates", "rate_list", "phase_s", "seed", "max_batch_size",
               "max_batch_delay", "timeout_s", "profile")  # fmt: skip
"""The options that shape a run; --render-only takes them from the run, not its command."""


def run_all(chosen: list[Server], args: argparse.Namespace) -> tuple[list[ServerRun], Session]:
    """Run the schedule against each server; save each run, and the session, in the work
    directory."""
    phase_names = [f"{k + 1}: {rate:g} req/s" for k, rate in enumerate(args.rate_list)]
    schedule = steps(
        [(rate, args.phase_s) for rate in args.rate_list], args.seed, names=phase_names
    )
    temporary = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reconfigure-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(chosen)} servers x {schedule.duration_s:g} s of load ({schedule.num_requests} "
        f"requests each); work directory {args.workdir}",
        flush=True,
    )
    command = "python benchmarks/reconfigure.py " + " ".join(sys.argv[1:])
    session = Session(command.strip(), f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    runs: list[ServerRun] = []
    fixed_layouts: dict[str, Any] = {}
    try:
        for server in chosen:
            run = run_server(server, args, schedule, fixed_layouts, session.notes)
            if run is not None:
                save(run, args)
                runs.append(run)
    finally:
        if temporary:  # keep the results, not gigabytes of exported weights
            shutil.rmtree(args.workdir / "cache", ignore_errors=True)
        options = {name: getattr(args, name) for name in RUN_OPTIONS}
        saved = {**asdict(session), "options": options}
        (args.workdir / "session.json").write_text(json.dumps(saved, indent=1, default=str))
    if not runs:
        raise SystemExit("no server ran")
    return runs, session


def load_saved(chosen: list[Server], args: argparse.Namespace) -> tuple[list[ServerRun], Session]:
    """The runs saved in the work directory by an earlier run (of the servers chosen), and
    that run's options (into `args`) and session."""
    if args.workdir is None:
        raise SystemExit("--render-only reads the runs of --workdir DIR")
    saved = json.loads((args.workdir / "session.json").read_text())
    for name, value in saved.pop("options").items():
        setattr(args, name, Path(value) if name == "profile" and value else value)
    runs = []
    for server in chosen:
        stem = args.workdir / server.slug
        if not Path(f"{stem}-server.json").exists():
            continue
        raw = json.loads(Path(f"{stem}-server.json").read_text())
        result = read_json(stem.with_suffix(".json"))
        run = ServerRun(server, raw["described"], result, raw["switches"],
                        raw["switches_counted"], raw["switches_in_metrics"], raw["exit_code"],
                        raw["leftover_pids"])  # fmt: skip
        runs.append(run)
    if not runs:
        raise SystemExit(f"no saved runs in {args.workdir}")
    return runs, Session(**saved)


def discrepancies(run: ServerRun) -> list[str]:
    """Where the server's three counts of its switches disagree, as notes for the report."""
    listed = len(run.switches)
    if run.switches_counted == listed and round(run.switches_in_metrics) == listed:
        return []
    return [
        f"`{run.server.name}`: {listed} switches listed by the API during the schedule, but "
        f"switches_total rose by {run.switches_counted} and packrat_reconfigurations_total by "
        f"{run.switches_in_metrics:.0f}."
    ]


if __name__ == "__main__":
    main()
