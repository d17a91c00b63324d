"""The report of benchmarks/reconfigure.py (Markdown): the checks, the servers, latency per
phase and per round, time in the worker, each load level against the best fixed plan, and the
switches of each policy (harness/reconfigure/switches.py)."""

from __future__ import annotations

import argparse
import math
import os
import platform

import numpy as np

from harness.reconfigure import text
from harness.reconfigure.analysis import (
    LEVEL_TOLERANCE,
    best_fixed,
    compare_levels,
    counterfactual_per_phase,
    impact_per_phase,
    p99_ratio,
    pooled,
    settled,
)
from harness.reconfigure.runs import ServerRun, Session, common_options
from harness.reconfigure.switches import switches_section
from harness.report import cpu_model, package_versions

SWITCH_TARGET_MS = 1000.0
DURING_P99_TARGET = 1.5  # p99 in flight during switches over steady p99


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
        out += switches_section(run, fixed, args)
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
        f"| failed requests, all servers | 0 | {failed} of {requests}: "
        f"{text.verdict(failed == 0)} |",
    ]
    reference = best_fixed(fixed)
    for run in policies:
        took = [s["took_ms"] for s in run.switches]
        longest = max(took, default=0.0)
        impacts = impact_per_phase(run)
        ratios = [impact.p99_ratio for _, impact in impacts[1:]]
        judged = [ratio for ratio in ratios if not math.isnan(ratio)]
        calm = all(ratio <= DURING_P99_TARGET for ratio in judged) if judged else None
        ratio_text = ", ".join(text.ratio(ratio) for ratio in ratios)
        whole = text.ratio(impacts[0][1].p99_ratio)
        levels = compare_levels(run, fixed, args.settle_s)
        met = sum(level.within for level in levels)
        name = run.server.name
        lines += [
            f"| {name}: longest of {len(took)} switches | <= {SWITCH_TARGET_MS:.0f} ms "
            f"| {longest:.2f} ms: {text.verdict(longest <= SWITCH_TARGET_MS if took else None)} |",
            f"| {name}: p99 in flight during a switch / steady p99, in each phase "
            f"| <= {DURING_P99_TARGET}x | {ratio_text} (whole schedule {whole})"
            f": {text.verdict(calm)} |",
            *_counterfactual_check(run, reference),
            f"| {name}: load levels within {LEVEL_TOLERANCE - 1:.0%} of the best fixed plan "
            f"(p50 and p99 of the settled requests of {len(run.rounds)} interleaved rounds, "
            f"pooled) | all {len(levels)} | {met} of {len(levels)}: "
            f"{text.verdict(met == len(levels) if levels else None)} |",
        ]
    return [*lines, ""]


def _counterfactual_check(run: ServerRun, reference: ServerRun | None) -> list[str]:
    if reference is None or not run.switches:
        return []
    rows = counterfactual_per_phase(run, reference)
    ratios = [p99_ratio(mine, theirs) for _, mine, theirs in rows[1:]]
    judged = [ratio for ratio in ratios if not math.isnan(ratio)]
    calm = all(ratio <= DURING_P99_TARGET for ratio in judged) if judged else None
    whole = text.ratio(p99_ratio(rows[0][1], rows[0][2]))
    return [
        f"| {run.server.name}: p99 of the requests in flight during a switch / p99 of the same "
        f"requests on {reference.server.name} (never switches; same round), in each phase "
        f"| <= {DURING_P99_TARGET}x | {', '.join(text.ratio(r) for r in ratios)} "
        f"(whole schedule {whole}): {text.verdict(calm)} |"
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
            f"| {run.server.name} | `{' '.join(run.server.options)}` | {text.plans(plans)} "
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
        cells = [text.p50_p99(s) for s in (*summary.phases, summary.overall)]
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
            " / ".join(text.p50(summaries[k]) for summaries in per_round)
            for k in range(len(phases))
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
                cells.append(f"{text.ms(p50)} / {text.ms(p90)}")
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
                f"| {level.phase} | {level.best} | {text.ms(level.best_p50_ms)} / "
                f"{text.ms(level.best_p99_ms)} | {run.server.name} | {text.ms(level.p50_ms)} / "
                f"{text.ms(level.p99_ms)} | {level.p50_ratio:.2f} | {level.p99_ratio:.2f} "
                f"| {text.verdict(level.within)} |"
            )
    return [*lines, ""]
