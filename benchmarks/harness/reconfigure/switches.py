"""The report's section on one policy's switches (benchmarks/reconfigure.py): requests in
flight during a switch against the steady ones and against the same requests on the best fixed
server, and a table of the switches (all of them, or a selection when there are many)."""

from __future__ import annotations

import argparse

from harness.reconfigure import text
from harness.reconfigure.analysis import (
    SwitchSeen,
    around,
    best_fixed,
    counterfactual_per_phase,
    impact_per_phase,
    p99_ratio,
)
from harness.reconfigure.runs import ServerRun
from harness.reconfigure.timelines import timeline_path

LISTED_SWITCHES = 20  # more than this: the report lists a selection, the JSON has all


def switches_section(run: ServerRun, fixed: list[ServerRun], args: argparse.Namespace) -> list[str]:
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
    begun = [text.phase_at(phases, span.start_s) for rnd in run.rounds for span in rnd.spans]
    for what, impact in impact_per_phase(run):
        count = len(begun) if what == "all" else begun.count(what)
        lines.append(
            f"| {what} | {count} | {text.n_p50_p99(impact.during)} "
            f"| {text.n_p50_p99(impact.steady)} | {text.ratio(impact.p99_ratio)} |"
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
                f"| {what} | {text.n_p50_p99(mine)} | {text.n_p50_p99(theirs)} "
                f"| {text.ratio(p99_ratio(mine, theirs))} |"
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
            f"| {number} | {a.span.start_s:.2f} | {text.phase_at(phases, a.span.start_s)} "
            f"| {text.plans([s['from']])} -> {text.plans([s['to']])} | {s['reason']} "
            f"| {s['took_ms']:.2f} "
            f"| {s['workers_started']} | {text.n_p50_p99(a.before)} | {text.n_p50_p99(a.during)} "
            f"| {text.n_p50_p99(a.after)} |"
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
    worst = sorted(range(len(seen)), key=lambda k: -text.finite_or(seen[k].around.during.p99_ms))
    chosen.update(worst[: LISTED_SWITCHES // 2])
    return sorted(chosen)
