"""Plans switching under a stepped load (issue 4), against fixed plans.

    python benchmarks/reconfigure.py [--model bert-base] [--rates 2,7,2] [--phase-s 40]
        [--rounds 3] [--max-batch-size 8] [--max-batch-delay 5] [--seed 0] [--settle-s 5]
        [--window-s 5] [--servers auto,follow,fat,plan,fixed] [--profile FILE]
        [--output docs/reconfigure.md] [--workdir DIR]

(with the project's venv active; HF_HUB_OFFLINE=1 is set for the servers).

One stepped open-loop schedule, Poisson arrivals at each of --rates for --phase-s seconds
(seeded: the same arrival times for every server and round), is sent to `packrat serve MODEL`
servers:

- `--policy auto` (each batch on the optimal plan for its own size) and `--policy follow` (the
  paper's batch-size estimator): their plans follow the load;
- fixed plans: `--fat`, `--plan '<T,1,ceil(B/T)>'` (T single-thread instances, T the usable
  cores) and `--policy fixed` (the optimal plan for --max-batch-size), stopped right away when
  the management API says it runs the same instances as one of the two.

The machine's speed drifts (on a shared 2-core VM by up to 20% over minutes), so servers
measured minutes apart would differ by more than the 10% judged below even on the same plan.
Hence the design: every server is started at the beginning (each on all the cores, as it would
be alone: only the one under load uses them) and they take turns, in --rounds rounds of the
whole schedule each. Round r starts at the (r mod n)-th of the n servers and goes round them
in order (ABCD, BCDA, CDAB, ...), so each server's rounds are spread over the whole session
and a steady drift falls alike on all of them in the figures pooled over rounds. Each server
is warmed up just before its first round (closed loops of 1, 2, 4, ... up to
--max-batch-size clients).

For every server: requests sent, failures, p50/p99 per phase (all rounds pooled) and the p50
of each phase in each round (to see the drift). For auto and follow also their switches (GET
/models/{name}/switches: count, duration, workers started; counted again from /metrics; each
round's over that round), p50/p99 before, during and after each switch (windows of --window-s
seconds; `packrat.bench.loadgen.switches`), requests in flight during any switch against the
steady ones, the same requests on the best fixed server (its same round: the same arrivals),
and per load level their p50 and p99 over the best fixed server's (the lowest p50 in that
phase), leaving out the first --settle-s seconds of each phase and pooling the requests of all
rounds. Latency counts from each request's scheduled send time.

Writes the report as Markdown (default docs/reconfigure.md; the hand-written analysis after
the `<!-- analysis: ... -->` marker line of an existing file is kept) and the latency
timelines of auto and follow in their first round next to it (reconfigure-auto.png,
reconfigure-follow.png). The work directory gets each server's log, its description and exit
(SERVER-server.json), per round its requests (loadgen JSON and CSV: SERVER-rN.json,
SERVER-rN.csv), switches and descriptions (SERVER-rN-server.json) and timeline
(SERVER-rN.png), and session.json (the command, its options, the order of each round);
without --workdir it is a new temp directory, kept (its model cache removed) and named at the
end. `--render-only --workdir DIR` writes the report again from what DIR holds, running
nothing (--settle-s and --window-s may differ from the run's). Every server is stopped
(SIGTERM, drained) at the end and checked to leave no process behind.

With the defaults on 2 cores it takes about 27 minutes: 4 servers x 3 rounds x 2 minutes of
load (24 minutes), plus about 10 s each to start the 5 servers (one only to be stopped when
--policy fixed runs the plan of another), warm up 4 and stop them; the first run in a work
directory also profiles the model before the first server answers (bert-base: 1 to 3 minutes;
the profile is cached in WORKDIR/cache and --profile FILE skips it). All the servers are up
at once, so the machine needs the memory of 4 of them.
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
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from packrat.bench.loadgen import (
    AroundSwitch,
    LatencyStats,
    LoadOptions,
    LoadResult,
    LoadSummary,
    OpenLoop,
    Phase,
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
    write_csv,
    write_json,
)
from packrat.topology import read_topology

from harness.client import PhaseProgress, describe, metric, payload_for, scrape, warm_up
from harness.report import cpu_model, kept_analysis, package_versions
from harness.serve import PackratServer, packrat_serve

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
    """A benchmark run as a whole: its command, when, the servers in the order each round ran
    them, and what it found worth a note."""

    command: str
    measured: str
    notes: list[str] = field(default_factory=list)
    order: list[list[str]] = field(default_factory=list)


@dataclass
class Round:
    """What one server did with one round of the schedule."""

    index: int  # from 0; the report counts from 1
    described: dict[str, Any]  # GET /models/{name}, just before the round
    result: LoadResult
    switches: list[dict[str, Any]]  # GET /models/{name}/switches, those during the round
    switches_counted: int  # the description's switches_total, increase over the round
    switches_in_metrics: float  # packrat_reconfigurations_total, increase over the round

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def spans(self) -> list[SwitchSpan]:
        start = self.result.start_unix_s
        return [
            SwitchSpan.from_unix(s["at_unix_s"], s["took_ms"] / 1000.0, start)
            for s in self.switches
        ]

    def failed(self) -> int:
        return self.result.summary().overall.failed


@dataclass
class ServerRun:
    """What one server did with the schedule, round after round, and how it stopped."""

    server: Server
    described: dict[str, Any]  # GET /models/{name}, after the warm-up
    rounds: list[Round] = field(default_factory=list)
    exit_code: int | None = None
    leftover_pids: list[int] = field(default_factory=list)

    @property
    def phases(self) -> tuple[Phase, ...]:
        return self.rounds[0].result.phases

    @property
    def records(self) -> list[RequestRecord]:
        """The requests of every round."""
        return [r for rnd in self.rounds for r in rnd.result.records]

    @property
    def switches(self) -> list[dict[str, Any]]:
        """The switches of every round, round after round."""
        return [s for rnd in self.rounds for s in rnd.switches]

    @property
    def switches_counted(self) -> int:
        return sum(rnd.switches_counted for rnd in self.rounds)

    @property
    def switches_in_metrics(self) -> float:
        return sum(rnd.switches_in_metrics for rnd in self.rounds)

    def failed(self) -> int:
        return sum(rnd.failed() for rnd in self.rounds)


@dataclass
class LiveServer:
    """A started server taking its turns: its process (URLs; exit status once stopped) and
    what it did so far."""

    process: PackratServer
    run: ServerRun

    @property
    def name(self) -> str:
        return self.run.server.name


# --- running the servers ----------------------------------------------------------------------


def say(name: str, text: str) -> None:
    print(f"[{name}] {text}", flush=True)


def start_all(
    chosen: Sequence[Server],
    args: argparse.Namespace,
    stack: ExitStack,
    live: list[LiveServer],
    notes: list[str],
) -> None:
    """Start each server in `chosen` (each stopped when `stack` closes), adding it to `live`;
    one that runs the same instances as a fixed server started before is stopped right away
    and left out. What does not add up goes to `notes`."""
    fixed_layouts: dict[str, Any] = {}
    for server in chosen:
        started = start(server, args, stack, fixed_layouts, notes)
        if started is not None:
            live.append(started)
            save_server(started.run, args)


def start(
    server: Server,
    args: argparse.Namespace,
    stack: ExitStack,
    fixed_layouts: dict[str, Any],
    notes: list[str],
) -> LiveServer | None:
    """Start `server`; hand its stop to `stack` and return it, or stop it now and return None
    if it runs the same instances as a fixed server already started (`fixed_layouts`: server
    name -> instances; a fixed server adds its own)."""
    model = args.model
    options = [*common_options(args), *server.options]
    say(server.name, f"starting packrat serve {model} {' '.join(options)}")
    log = args.workdir / f"packrat-{server.slug}.log"
    with ExitStack() as own:
        # The first server may profile the model before it answers: minutes for bert-base.
        process = own.enter_context(
            packrat_serve(model, options, args.workdir, log, SERVER_START_TIMEOUT_S)
        )
        described = describe(process.urls, model)
        layout = [(i["threads"], i["cores"]) for i in described["instances"]]
        plan = described["plan"]["describe"]
        same = [name for name, seen in fixed_layouts.items() if seen == layout]
        if server.follows_load or not same:
            if not server.follows_load:
                fixed_layouts[server.name] = layout
            say(server.name, f"ready, plan {plan}, policy {described['policy']}")
            stack.enter_context(own.pop_all())  # stopped with the others, at the end
            return LiveServer(process, ServerRun(server, described))
        say(server.name, f"runs {plan} on the instances of {same[0]}: skipped")
        notes.append(f"`{server.name}` runs `{plan}` on the instances of `{same[0]}`: skipped.")
    stopped(server.name, process, notes)
    return None


def stopped(name: str, process: PackratServer, notes: list[str]) -> None:
    """Note how a stopped server exited, and any process it left behind."""
    if process.exit_code != 0:
        notes.append(f"`{name}`: exit status {process.exit_code} after SIGTERM (expected 0).")
    if process.leftover_pids:
        notes.append(f"`{name}`: processes {process.leftover_pids} outlived the server (killed).")
    say(name, f"stopped: exit status {process.exit_code}, {len(process.leftover_pids)} left")


def rotated(live: Sequence[LiveServer], index: int) -> list[LiveServer]:
    """The servers in the order round `index` (from 0) runs them: from the (index mod n)-th
    on, round the list."""
    first = index % len(live)
    return [*live[first:], *live[:first]]


def run_rounds(
    live: Sequence[LiveServer],
    args: argparse.Namespace,
    schedule: OpenLoop,
    session: Session,
) -> None:
    """Every round: the schedule against each server in turn, in the round's rotated order;
    each round saved as it ends."""
    for index in range(args.rounds):
        order = rotated(live, index)
        session.order.append([one.name for one in order])
        names = ", ".join(session.order[-1])
        print(f"round {index + 1} of {args.rounds}: {names}", flush=True)
        for one in order:
            if not one.run.rounds:
                warm(one, args)
            rnd = load(one, args, schedule, index)
            one.run.rounds.append(rnd)
            save_round(one.run, rnd, args)
            session.notes.extend(discrepancies(one.run.server, rnd))


def warm(live: LiveServer, args: argparse.Namespace) -> None:
    """Warm the server up and describe it after that."""
    urls, model = live.process.urls, args.model
    say(live.name, "warming up")
    payload = payload_for(describe(urls, model))
    warm_up(Target(urls["inference"], model), payload, args.max_batch_size)
    live.run.described = describe(urls, model)
    save_server(live.run, args)


def load(live: LiveServer, args: argparse.Namespace, schedule: OpenLoop, index: int) -> Round:
    """Send the server the schedule, and collect what it switched meanwhile: round `index`."""
    urls, model = live.process.urls, args.model
    name = f"{live.name}, round {index + 1}/{args.rounds}"
    target = Target(urls["inference"], model)
    described = describe(urls, model)
    payload = payload_for(described)
    before = scrape(urls["metrics"] + "/metrics")
    say(name, f"{schedule.num_requests} requests in {schedule.duration_s:g} s")
    progress = PhaseProgress(name, schedule.phases)
    result = run_load(target, schedule, LoadOptions(payload, args.timeout_s), progress=progress)
    logged = httpx.get(f"{urls['management']}/models/{model}/switches", timeout=30).json()
    after = scrape(urls["metrics"] + "/metrics")
    counted = describe(urls, model)["switches_total"] - described["switches_total"]
    label = f'model="{model}"'
    in_metrics = metric(after, "packrat_reconfigurations_total", label) - metric(
        before, "packrat_reconfigurations_total", label
    )
    # The log holds the earlier rounds' switches too: only those since this round began.
    during = [s for s in logged if s["at_unix_s"] >= result.start_unix_s]
    rnd = Round(index, described, result, during, counted, in_metrics)
    failed = rnd.failed()
    say(name, f"done: {failed} of {len(result.records)} failed, {len(during)} switches")
    return rnd


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


def round_stem(workdir: Path, server: Server, number: int) -> Path:
    """Where round `number` (from 1) of `server` is saved, without a suffix."""
    return workdir / f"{server.slug}-r{number}"


def save_server(run: ServerRun, args: argparse.Namespace) -> None:
    """What concerns the server as a whole, in the work directory: its options, its
    description after the warm-up, its rounds so far and how it stopped."""
    raw = {
        "server": run.server.name,
        "options": [*common_options(args), *run.server.options],
        "described": run.described,
        "rounds": len(run.rounds),
        "exit_code": run.exit_code,
        "leftover_pids": run.leftover_pids,
    }
    (args.workdir / f"{run.server.slug}-server.json").write_text(json.dumps(raw, indent=1))


def save_round(run: ServerRun, rnd: Round, args: argparse.Namespace) -> None:
    """One round's requests, switches and description, in the work directory."""
    stem = round_stem(args.workdir, run.server, rnd.number)
    write_json(rnd.result, stem.with_suffix(".json"))
    write_csv(rnd.result.records, stem.with_suffix(".csv"))
    raw = {
        "server": run.server.name,
        "round": rnd.number,
        "described": rnd.described,
        "switches": rnd.switches,
        "switches_counted": rnd.switches_counted,
        "switches_in_metrics": rnd.switches_in_metrics,
        "around_switches": [asdict(a) for a in around_round(rnd, args.window_s)],
    }
    Path(f"{stem}-server.json").write_text(json.dumps(raw, indent=1))
    save_server(run, args)


def draw_timelines(run: ServerRun, args: argparse.Namespace) -> None:
    """Each round's latency timeline with its switches marked, in the work directory; for the
    servers that switch, round 1's also next to the report."""
    for rnd in run.rounds:
        draw_timeline(run, rnd, round_stem(args.workdir, run.server, rnd.number), args)
    if run.server.follows_load and run.rounds:
        draw_timeline(run, run.rounds[0], timeline_path(args.output, run), args)


def draw_timeline(run: ServerRun, rnd: Round, png: Path, args: argparse.Namespace) -> None:
    """Round `rnd`'s latency timeline with its switches marked, as `png` (suffix added)."""
    spans = rnd.spans
    title = (
        f"{args.model}, {run.server.name}, round {rnd.number} of {len(run.rounds)}: latency per "
        f"request, {len(spans)} switches (phases dotted)"
    )
    png = png.with_suffix(".png")
    starts = sorted(span.start_s for span in spans)
    gaps = np.diff(starts) if len(starts) > 1 else np.array([math.inf])
    # Labels need room: a few switches, far enough apart that their labels do not overlap.
    if len(spans) <= LABELLED_SWITCHES and gaps.min() >= LABEL_GAP * rnd.result.phases[-1].end_s:
        markers = [(span.start_s, s["to"]) for span, s in zip(spans, rnd.switches, strict=True)]
        plot_timeline(rnd.result, png, markers=markers, title=title)
    else:
        rug = [span.start_s for span in spans]
        plot_timeline(rnd.result, png, title=title, rug=rug, rug_label="switches")


def timeline_path(output: Path, run: ServerRun) -> Path:
    return output.with_name(f"{output.stem}-{run.server.slug}.png")


# --- analysis ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchSeen:
    """One switch of a server, the round it came in, and the requests around it."""

    round: Round
    switch: dict[str, Any]
    around: AroundSwitch


def around_round(rnd: Round, window_s: float) -> list[AroundSwitch]:
    return around_switches(rnd.result.records, rnd.spans, window_s)


def around(run: ServerRun, window_s: float) -> list[SwitchSeen]:
    """Every switch of every round, round after round, with the requests around it."""
    return [
        SwitchSeen(rnd, switch, near)
        for rnd in run.rounds
        for switch, near in zip(rnd.switches, around_round(rnd, window_s), strict=True)
    ]


def pooled(run: ServerRun) -> LoadSummary:
    """Per phase and overall, the requests of all rounds together (durations added up)."""
    records, rounds = run.records, len(run.rounds)
    phases = tuple(
        PhaseSummary.of(p.name, p.duration_s * rounds, [r for r in records if r.phase == p.name])
        for p in run.phases
    )
    total_s = (run.phases[-1].end_s - run.phases[0].start_s) * rounds
    return LoadSummary(phases, PhaseSummary.of("overall", total_s, records))


def settled(results: Sequence[LoadResult], settle_s: float) -> list[PhaseSummary]:
    """Each phase without its first `settle_s` seconds (requests scheduled after that), the
    requests of all `results` (rounds of the same schedule) together."""
    summaries = []
    for phase in results[0].phases:
        from_s = min(phase.start_s + settle_s, phase.end_s)
        records = [
            r
            for result in results
            for r in result.records
            if r.phase == phase.name and r.scheduled_s >= from_s
        ]
        duration_s = (phase.end_s - from_s) * len(results)
        summaries.append(PhaseSummary.of(phase.name, duration_s, records))
    return summaries


def settled_rounds(run: ServerRun, settle_s: float) -> list[PhaseSummary]:
    """`settled` over all the rounds of `run`."""
    return settled([rnd.result for rnd in run.rounds], settle_s)


def in_flight(rnd: Round) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """The round's requests in flight during any of its switches, and the rest (steady)."""
    mask = in_flight_during_any(rnd.result.records, rnd.spans)
    during = [r for r, hit in zip(rnd.result.records, mask, strict=True) if hit]
    steady = [r for r, hit in zip(rnd.result.records, mask, strict=True) if not hit]
    return during, steady


def impact_per_phase(run: ServerRun) -> list[tuple[str, SwitchImpact]]:
    """In flight during a switch (of the same round) against steady, all rounds together:
    over the whole schedule, then in each phase."""
    during: list[RequestRecord] = []
    steady: list[RequestRecord] = []
    for rnd in run.rounds:
        mine, rest = in_flight(rnd)
        during += mine
        steady += rest

    def impact(phase: str | None) -> SwitchImpact:
        def of(records: list[RequestRecord]) -> RequestSet:
            return RequestSet.of([r for r in records if phase is None or r.phase == phase])

        return SwitchImpact(of(during), of(steady))

    return [("all", impact(None)), *((p.name, impact(p.name)) for p in run.phases)]


def best_fixed(fixed: Sequence[ServerRun]) -> ServerRun | None:
    """The fixed server with the lowest p50 over the whole schedule, all rounds pooled."""
    scored = [(pooled(run).overall.latency, run) for run in fixed]
    ranked = [(stats.p50_ms, k, run) for k, (stats, run) in enumerate(scored) if stats is not None]
    return min(ranked)[2] if ranked else None


def same_requests(records: Sequence[RequestRecord], reference: LoadResult) -> list[RequestRecord]:
    """`reference`'s records of the requests scheduled at the same times as `records` (every
    server and round gets the same seeded schedule)."""
    wanted = {r.scheduled_s for r in records}
    return [r for r in reference.records if r.scheduled_s in wanted]


def counterfactual_per_phase(
    run: ServerRun, reference: ServerRun
) -> list[tuple[str, RequestSet, RequestSet]]:
    """Per phase (first "all"): the requests in flight during a switch, and the same requests
    on `reference`, a server that never switched, each round of `run` against the same round
    of `reference`, all rounds together. Comparing the two isolates what switching cost them:
    the requests around a switch come in the bursts that made it, so they are slower than the
    steady ones on any server."""
    mine: list[RequestRecord] = []
    theirs: list[RequestRecord] = []
    for rnd, ref in zip(run.rounds, reference.rounds, strict=False):  # rounds both ran
        during, _ = in_flight(rnd)
        mine += during
        theirs += same_requests(during, ref.result)
    rows = [("all", RequestSet.of(mine), RequestSet.of(theirs))]
    for phase in run.phases:
        rows.append(
            (
                phase.name,
                RequestSet.of([r for r in mine if r.phase == phase.name]),
                RequestSet.of([r for r in theirs if r.phase == phase.name]),
            )
        )
    return rows


def _p99_ratio(mine: RequestSet, theirs: RequestSet) -> float:
    return mine.p99_ms / theirs.p99_ms if theirs.p99_ms > 0 else math.nan


@dataclass(frozen=True)
class LevelComparison:
    """One phase, settled, all rounds pooled: a policy's latency against the best fixed
    server's."""

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
    """Per phase (settled, all rounds pooled), `policy`'s latency against the fixed server
    with the lowest p50."""
    theirs = {run.server.name: settled_rounds(run, settle_s) for run in fixed}
    rows = []
    for k, phase in enumerate(settled_rounds(policy, settle_s)):
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
    first = runs[0].rounds[0].result
    requests = len(first.records)
    rounds = max(len(run.rounds) for run in runs)
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
        f"({rates}), seed {args.seed}: the same {requests} arrival times for every server and "
        f"round. Each request is a random {spec.get('dtype')} tensor of shape "
        f"{spec.get('shape')} posted raw to the TorchServe API; its latency counts from its "
        "scheduled send time. "
        f"Servers: `packrat serve {args.model} {' '.join(common_options(args))}` plus the "
        "options below, all started at the beginning on this machine (each on all its cores) "
        "and loaded one at a time; each warmed up just before its first round (closed loops of "
        f"1, 2, 4, ... {args.max_batch_size} clients).",
        "",
        *_interleaving(runs, rounds, session),
        *_checks(runs, policies, fixed, args),
        *_servers_table(runs),
        *_phases_table(runs),
        *_rounds_table(runs, args.settle_s),
        *_compute_table(runs),
        *_levels(policies, fixed, args.settle_s),
    ]
    for run in policies:
        out += _switches(run, fixed, args)
    if session.notes:
        out += ["## Notes from the runs", "", *(f"- {note}" for note in session.notes), ""]
    return "\n".join(out)


def _interleaving(runs: list[ServerRun], rounds: int, session: Session) -> list[str]:
    """How the rounds were interleaved, and why."""
    orders = "; ".join(
        f"round {k + 1}: {', '.join(order)}" for k, order in enumerate(session.order)
    )
    orders = f" ({orders})" if orders else ""
    if rounds == 1:
        return [
            f"One round: the schedule was sent once to every server, one after another{orders}. "
            "Not interleaved: the figures of servers measured minutes apart include the "
            "machine's drift in speed between them.",
            "",
        ]
    lines = [
        f"Rounds, interleaved: the whole schedule was sent {rounds} times to every server, in "
        "each round to every server in turn, each round starting one server further along than "
        f"the one before{orders}. The machine's speed drifts over minutes, so servers measured "
        f"minutes apart differ by more than the {LEVEL_TOLERANCE - 1:.0%} judged below even on "
        "the same plan; interleaved, each server's rounds spread over the whole session and a "
        "steady drift falls alike on all of them. The figures below pool the requests of all "
        "rounds unless they say otherwise; the p50 of each round is listed to show the drift.",
    ]
    short = [run.server.name for run in runs if len(run.rounds) < rounds]
    if short:
        lines.append(
            f"Fewer than {rounds} rounds (the run was cut short): {', '.join(short)}; "
            "pooled figures of different numbers of rounds are not drift-balanced."
        )
    return [*lines, ""]


def _checks(
    runs: list[ServerRun],
    policies: list[ServerRun],
    fixed: list[ServerRun],
    args: argparse.Namespace,
) -> list[str]:
    failed = sum(run.failed() for run in runs)
    requests = sum(len(run.records) for run in runs)
    lines = [
        "## Checks",
        "",
        "All rounds together.",
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
            f"| <= {DURING_P99_TARGET}x | {ratio_text} (whole schedule {whole})"
            f": {_verdict(calm)} |",
            *_counterfactual_check(run, reference),
            f"| {name}: load levels within {LEVEL_TOLERANCE - 1:.0%} of the best fixed plan "
            f"(p50 and p99 of the settled requests of {len(run.rounds)} interleaved rounds, "
            f"pooled) | all {len(levels)} | {met} of {len(levels)}: "
            f"{_verdict(met == len(levels) if levels else None)} |",
        ]
    return [*lines, ""]


def _counterfactual_check(run: ServerRun, reference: ServerRun | None) -> list[str]:
    if reference is None or not run.switches:
        return []
    rows = counterfactual_per_phase(run, reference)
    ratios = [_p99_ratio(mine, theirs) for _, mine, theirs in rows[1:]]
    judged = [ratio for ratio in ratios if not math.isnan(ratio)]
    calm = all(ratio <= DURING_P99_TARGET for ratio in judged) if judged else None
    whole = _ratio(_p99_ratio(rows[0][1], rows[0][2]))
    return [
        f"| {run.server.name}: p99 of the requests in flight during a switch / p99 of the same "
        f"requests on {reference.server.name} (never switches; same round), in each phase "
        f"| <= {DURING_P99_TARGET}x | {', '.join(_ratio(r) for r in ratios)} "
        f"(whole schedule {whole}): {_verdict(calm)} |"
    ]


def _servers_table(runs: list[ServerRun]) -> list[str]:
    lines = [
        "## Servers",
        "",
        "| server | options | plans run | rounds | sent | failed "
        "| switches (API / counter / metrics) | switch took, ms: p50 / p99 / max "
        "| workers started | exit status | processes left |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        overall = pooled(run).overall
        switches = run.switches
        took = [s["took_ms"] for s in switches]
        first = run.described["plan"]["describe"]
        plans = dict.fromkeys([first, *(s["to"] for s in switches)])
        took_text = "-"
        if took:
            p50, p99 = np.percentile(took, [50, 99])
            took_text = f"{p50:.2f} / {p99:.2f} / {max(took):.2f}"
        started = sum(s["workers_started"] for s in switches)
        counts = f"{len(switches)} / {run.switches_counted} / {run.switches_in_metrics:.0f}"
        lines.append(
            f"| {run.server.name} | `{' '.join(run.server.options)}` | {_plans(plans)} "
            f"| {len(run.rounds)} | {overall.sent} | {overall.failed} | {counts} | {took_text} "
            f"| {started} | {run.exit_code} | {len(run.leftover_pids)} |"
        )
    lines += [
        "",
        "Plans run: the plan after the warm-up, then each other plan switched to. Sent, failed "
        "and switches: all rounds together; switches: those during the rounds, from "
        "`GET /models/{name}/switches`, from the increase of the description's "
        "`switches_total`, and from `packrat_reconfigurations_total`. Exit status and "
        "processes left: once, when the server was stopped after the last round.",
        "",
    ]
    return lines


def _phases_table(runs: list[ServerRun]) -> list[str]:
    phases = runs[0].phases
    head = " | ".join(f"{p.name}: p50 / p99" for p in phases)
    lines = [
        "## Latency per phase (ms, whole phases, all rounds pooled)",
        "",
        f"| server | {head} | all: p50 / p99 |",
        "| --- |" + " ---: |" * (len(phases) + 1),
    ]
    for run in runs:
        summary = pooled(run)
        cells = [_p50_p99(s) for s in (*summary.phases, summary.overall)]
        lines.append(f"| {run.server.name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _rounds_table(runs: list[ServerRun], settle_s: float) -> list[str]:
    """Each round's p50 per phase, and when each round began: the drift, and how much the
    interleaving had to even out."""
    phases = runs[0].phases
    rounds = max(len(run.rounds) for run in runs)
    session_start = min(rnd.result.start_unix_s for run in runs for rnd in run.rounds)
    numbers = " / ".join(f"r{k + 1}" for k in range(rounds))
    lines = [
        f"## Each round (p50, ms, first {settle_s:g} s of each phase left out)",
        "",
        f"Per cell the rounds in order ({numbers}); began: minutes after the first round began.",
        "",
        "| server | began, min | " + " | ".join(p.name for p in phases) + " |",
        "| --- | ---: |" + " ---: |" * len(phases),
    ]
    for run in runs:
        began = " / ".join(
            f"{(rnd.result.start_unix_s - session_start) / 60:.1f}" for rnd in run.rounds
        )
        per_round = [settled([rnd.result], settle_s) for rnd in run.rounds]
        cells = [
            " / ".join(_p50(summaries[k]) for summaries in per_round) for k in range(len(phases))
        ]
        lines.append(f"| {run.server.name} | {began} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _compute_table(runs: list[ServerRun]) -> list[str]:
    phases = runs[0].phases
    lines = [
        "## Time in the worker per request (ms, p50 and p90 per phase, all rounds pooled)",
        "",
        "The worker's own time for the sub-batch each request ran in (the response's "
        "`Server-Timing: compute`): what the model took, queueing and HTTP left out.",
        "",
        "| server | " + " | ".join(p.name for p in phases) + " |",
        "| --- |" + " ---: |" * len(phases),
    ]
    for run in runs:
        cells = []
        records = run.records
        for phase in phases:
            mine = [r for r in records if r.phase == phase.name and r.ok]
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
        "For every server and phase, the settled requests of all its interleaved rounds "
        "pooled. Best fixed plan: the fixed server with the lowest pooled p50 in that phase. "
        f"Ratios are the policy's over the best's; within {LEVEL_TOLERANCE - 1:.0%} means both "
        f"ratios <= {LEVEL_TOLERANCE:.2f}.",
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
    rounds = len(run.rounds)
    lines = [
        f"## Switches of {name}",
        "",
        f"![{name}, round 1 of {rounds}: latency per request, switches marked]"
        f"({timeline_path(args.output, run).name})",
        "",
        f"The picture: round 1 of {rounds} (every round's is in the work directory, "
        f"`{run.server.slug}-rN.png`). The tables: all rounds together.",
        "",
        "Requests in flight at any moment of a switch (from the request's scheduled time to its "
        "reply), against the rest (steady):",
        "",
        "| requests | switches begun | during a switch: n / p50 / p99, ms "
        "| steady: n / p50 / p99, ms | p99 ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    phases = run.phases
    begun = [_phase_at(phases, span.start_s) for rnd in run.rounds for span in rnd.spans]
    for what, impact in impact_per_phase(run):
        count = len(begun) if what == "all" else begun.count(what)
        lines.append(
            f"| {what} | {count} | {_n_p50_p99(impact.during)} | {_n_p50_p99(impact.steady)} "
            f"| {_ratio(impact.p99_ratio)} |"
        )
    reference = best_fixed(fixed)
    if reference is not None and run.switches:
        lines += [
            "",
            "The same requests on the fixed server with the lowest p50 "
            f"({reference.server.name}), which never switches, in the same round (the same "
            "arrivals): the requests around a switch come in the burst that made it, so they are "
            "slower than the steady ones on any server; this comparison isolates what the switch "
            "cost them.",
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
    seen = around(run, args.window_s)
    shown = _selected(run, seen)
    lines += [
        "",
        f"Each switch: before = requests that finished in the {args.window_s:g} s before it, "
        f"during = in flight at any moment of it, after = scheduled in the {args.window_s:g} s "
        "after it (n / p50 / p99, ms; a window may hold other switches; at: seconds from the "
        "start of its round).",
    ]
    if len(shown) < len(seen):
        lines.append(
            f"{len(seen)} switches; listed: the first of each phase in each round and the "
            f"{LISTED_SWITCHES // 2} with the highest p99 during. All of them are in "
            f"`{run.server.slug}-rN-server.json` in the work directory."
        )
    lines += [
        "",
        "| round | at, s | phase | from -> to | reason | took, ms | workers started | before "
        "| during | after |",
        "| ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in shown:
        s, a, number = seen[k].switch, seen[k].around, seen[k].round.number
        lines.append(
            f"| {number} | {a.span.start_s:.2f} | {_phase_at(phases, a.span.start_s)} "
            f"| {_plans([s['from']])} -> {_plans([s['to']])} | {s['reason']} | {s['took_ms']:.2f} "
            f"| {s['workers_started']} | {_n_p50_p99(a.before)} | {_n_p50_p99(a.during)} "
            f"| {_n_p50_p99(a.after)} |"
        )
    return [*lines, ""]


def _selected(run: ServerRun, seen: list[SwitchSeen]) -> list[int]:
    """Indices of the switches to list: all if few, else the first of each phase in each
    round and the ones with the highest p99 during, in round and time order."""
    if len(seen) <= LISTED_SWITCHES:
        return list(range(len(seen)))
    chosen = set()
    for rnd in run.rounds:
        for phase in run.phases:
            first = next(
                (
                    k
                    for k, one in enumerate(seen)
                    if one.round is rnd and one.around.span.start_s >= phase.start_s
                ),
                None,
            )
            if first is not None:
                chosen.add(first)
    worst = sorted(range(len(seen)), key=lambda k: -_finite_or(seen[k].around.during.p99_ms))
    chosen.update(worst[: LISTED_SWITCHES // 2])
    return sorted(chosen)


def _plans(plans: Iterable[str]) -> str:
    return ", ".join(f"`{plan}`" for plan in plans)


def _phase_at(phases: Sequence[Phase], at_s: float) -> str:
    return next((p.name for p in reversed(phases) if p.start_s <= at_s), "-")


def _p50_p99(summary: PhaseSummary) -> str:
    lat = summary.latency
    return "-" if lat is None else f"{_ms(lat.p50_ms)} / {_ms(lat.p99_ms)}"


def _p50(summary: PhaseSummary) -> str:
    lat = summary.latency
    return "-" if lat is None else _ms(lat.p50_ms)


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
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="times the schedule is sent to every server, interleaved (against drift)",
    )
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
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    return args


def main() -> None:
    args = parse_args()
    names = [p for p in args.servers.split(",") if p]
    if args.render_only:
        runs, session = load_saved(names, args)
    else:
        runs, session = run_all(servers(names, args.max_batch_size), args)
    for run in runs:
        draw_timelines(run, args)
    report = render(runs, args, session)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report + kept_analysis(args.output))
    print(f"wrote {args.output}; raw results and server logs in {args.workdir}")


RUN_OPTIONS = ("model", "rates", "rate_list", "phase_s", "rounds", "seed", "max_batch_size",
               "max_batch_delay", "timeout_s", "profile")  # fmt: skip
"""The options that shape a run; --render-only takes them from the run, not its command."""


def run_all(chosen: list[Server], args: argparse.Namespace) -> tuple[list[ServerRun], Session]:
    """Start every server, run the rounds, stop them all; save each round as it ends, each
    server's stop, and the session, in the work directory."""
    phase_names = [f"{k + 1}: {rate:g} req/s" for k, rate in enumerate(args.rate_list)]
    schedule = steps(
        [(rate, args.phase_s) for rate in args.rate_list], args.seed, names=phase_names
    )
    temporary = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reconfigure-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(chosen)} servers x {args.rounds} rounds x {schedule.duration_s:g} s of load "
        f"({schedule.num_requests} requests each time); work directory {args.workdir}",
        flush=True,
    )
    command = "python benchmarks/reconfigure.py " + " ".join(sys.argv[1:])
    session = Session(command.strip(), f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    live: list[LiveServer] = []
    try:
        with ExitStack() as stack:  # stops every server started, however this ends
            start_all(chosen, args, stack, live, session.notes)
            if live:
                run_rounds(live, args, schedule, session)
    finally:
        for one in live:
            stopped(one.name, one.process, session.notes)
            one.run.exit_code = one.process.exit_code
            one.run.leftover_pids = one.process.leftover_pids
            save_server(one.run, args)
        if temporary:  # keep the results, not gigabytes of exported weights
            shutil.rmtree(args.workdir / "cache", ignore_errors=True)
        options = {name: getattr(args, name) for name in RUN_OPTIONS}
        saved = {**asdict(session), "options": options}
        (args.workdir / "session.json").write_text(json.dumps(saved, indent=1, default=str))
    runs = [one.run for one in live if one.run.rounds]
    if not runs:
        raise SystemExit("no server ran")
    return runs, session


def load_saved(names: list[str], args: argparse.Namespace) -> tuple[list[ServerRun], Session]:
    """The runs saved in the work directory by an earlier run (of the servers named), and
    that run's options (into `args`) and session."""
    if args.workdir is None:
        raise SystemExit("--render-only reads the runs of --workdir DIR")
    saved = json.loads((args.workdir / "session.json").read_text())
    for name, value in saved.pop("options").items():
        setattr(args, name, Path(value) if name == "profile" and value else value)
    runs = []
    for server in servers(names, args.max_batch_size):  # the run's --max-batch-size names plan
        path = args.workdir / f"{server.slug}-server.json"
        if not path.exists():
            continue
        raw = json.loads(path.read_text())
        run = ServerRun(server, raw["described"], saved_rounds(server, raw, args.workdir),
                        raw["exit_code"], raw["leftover_pids"])  # fmt: skip
        if run.rounds:
            runs.append(run)
    if not runs:
        raise SystemExit(f"no saved runs in {args.workdir}")
    args.rounds = max(len(run.rounds) for run in runs)
    return runs, Session(**saved)


def saved_rounds(server: Server, raw: dict[str, Any], workdir: Path) -> list[Round]:
    """The rounds of `server` saved in `workdir` (`raw`: its SERVER-server.json). A work
    directory from before --rounds holds one round, in SERVER.json and SERVER-server.json."""
    if "rounds" not in raw:
        result = read_json((workdir / server.slug).with_suffix(".json"))
        return [Round(0, raw["described"], result, raw["switches"], raw["switches_counted"],
                      raw["switches_in_metrics"])]  # fmt: skip
    rounds = []
    for index in range(raw["rounds"]):
        stem = round_stem(workdir, server, index + 1)
        one = json.loads(Path(f"{stem}-server.json").read_text())
        result = read_json(stem.with_suffix(".json"))
        rounds.append(Round(index, one["described"], result, one["switches"],
                            one["switches_counted"], one["switches_in_metrics"]))  # fmt: skip
    return rounds


def discrepancies(server: Server, rnd: Round) -> list[str]:
    """Where the server's three counts of its switches in a round disagree, as notes for the
    report."""
    listed = len(rnd.switches)
    if rnd.switches_counted == listed and round(rnd.switches_in_metrics) == listed:
        return []
    return [
        f"`{server.name}`, round {rnd.number}: {listed} switches listed by the API during the "
        f"round, but switches_total rose by {rnd.switches_counted} and "
        f"packrat_reconfigurations_total by {rnd.switches_in_metrics:.0f}."
    ]


if __name__ == "__main__":
    main()
