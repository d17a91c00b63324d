"""Running the servers of benchmarks/reconfigure.py: start them all (leaving out a fixed
server that runs the instances of another), then every round, the schedule against each in
turn (warmed up before its first), each round saved as it ends."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from packrat.bench.loadgen import LoadOptions, OpenLoop, Target, run_load, write_csv, write_json

from harness.client import PhaseProgress, describe, metric, payload_for, scrape, warm_up
from harness.reconfigure.analysis import around_round
from harness.reconfigure.runs import (
    LiveServer,
    Round,
    Server,
    ServerRun,
    Session,
    common_options,
    discrepancies,
    round_stem,
    save_server,
)
from harness.rounds import rotated
from harness.serve import PackratServer, packrat_serve

SERVER_START_TIMEOUT_S = 900.0


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
