"""The end-to-end report's fixed parts (harness/e2e/report.py renders the figures): how it
was measured, which plan auto runs and why, the microbenchmark, the servers, TorchServe's log
lines, where the time went."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from packrat.bench.offline import Measurement
from packrat.bench.report import mean_speedup
from packrat.controller.policy import SWITCH_MARGIN
from packrat.stats import t95

from harness.e2e.runs import WARM_BATCHES, System, SystemRun
from harness.e2e.session import Session
from harness.e2e.stats import ModelRuns, gap, micro_summaries


def method(session: Session, chosen: list[System]) -> list[str]:
    opts = session.options
    t = session.cores
    rounds = opts.get("rounds", 1)
    return [
        "## How it was measured",
        "",
        f"Every system serves one model at a time on the same {t} cores, with the same batching: "
        f"at most {opts['max_batch_size']} requests per batch, the first waiting at most "
        f"{opts['max_batch_delay']} ms for more (TorchServe's `batch_size` and "
        "`max_batch_delay`, which Packrat's `--max-batch-size` and `--max-batch-delay` copy). "
        "Requests are one seeded random tensor of the model's input, posted raw "
        "(`application/octet-stream`) to the TorchServe inference API, which both serve; "
        "answers are JSON. The load generator (`packrat.bench.loadgen`) runs on the same "
        "machine.",
        "",
        "| key | system | how it is started |",
        "| --- | --- | --- |",
        *(f"| `{s.key}` | {s.name} | {s.settings} |" for s in chosen),
        "",
        "Packrat: `auto` runs each batch on the optimizer's plan for its size when that pays "
        "(next section); the fat plan is one instance with every core; "
        f"`<{t},1,...>` pins {t} single-thread instances, each batch split across them. "
        "TorchServe 0.12: the same model exported with `packrat export` (TorchScript, same "
        "graph and weights), archived with `benchmarks/torchserve/raw_tensor_handler.py`, "
        "registered through the management API with `initial_workers`, `batch_size` and "
        "`max_batch_delay`. Threads, as a user sets them: one worker keeps torch's default of "
        f"one intra-op thread per core ({t}); {t} workers get one thread each "
        "(`OMP_NUM_THREADS=1`, and `torch.set_num_threads(1)` in the handler's `initialize`). "
        "TorchServe does not pin workers to cores and sends a whole batch to one worker; it "
        "runs no plan. Its handler writes each answer with orjson from the numpy row, as "
        "Packrat's server does.",
        "",
        f"**Rounds.** {rounds} rounds per model; in each, every system runs once (start, "
        "bursts, open loop, stop), in an order rotated from round to round (table above), so "
        "that no system always runs first or last while the machine drifts (10-30% within "
        "minutes here). Servers restart every round rather than stay up: five servers at "
        "once would hold five models' workers and TorchServe's JVMs while one is measured, "
        "and the idle ones would still take slices of the cores; a fresh start also makes "
        "each round the same procedure (auto starts from the same plan, TorchServe from a "
        "cold JVM), so the spread between rounds is what a user re-running would see. The "
        "microbenchmark runs once per model, before the rounds.",
        "",
        "**Bursts** (latency per batch size, like the paper's Figure 5): N requests sent at "
        "once, the next burst when all N are answered, for N = 1, 2, 4, ... "
        f"{opts['max_batch_size']}: every batch should hold N requests (batch column); the "
        f"batcher waits the batch delay ({opts['max_batch_delay']} ms) for more when N < "
        f"{opts['max_batch_size']}, on every system alike. {WARM_BATCHES} warm-up bursts, then "
        f"{opts['bursts']} measured per round; latency of a burst = from its send to its last "
        "answer (a batch's latency, end to end), averaged over the round's bursts.",
        "",
        f"**Open loop**: {opts['phase_s']:g} s per rate, rates ascending, each started once "
        "the previous one's answers are all in. Arrivals: exactly round(rate x "
        f"{opts['phase_s']:g} s) requests at sorted uniform times (a Poisson process "
        "conditioned on its count, so that the rate offered is the rate asked for up to "
        "rounding; a free Poisson count strays by +-sqrt(count)), seeded by the round and the "
        "rate: every system gets the same times in a round, each round new ones. Rows are "
        "labelled with the rate offered (requests sent / the phase's seconds). Latency counts "
        "from each request's *scheduled* send time (no coordinated omission). Rates asked for "
        f"are fractions ({opts['fractions']}) of the fat instance's capacity, "
        f"{opts['max_batch_size']} / L({t}, {opts['max_batch_size']}) from the model's profile "
        "(the one every Packrat server here planned with). Both servers queue at most 100 "
        "requests per model and refuse more (503), counted as failures.",
        "",
        "**Statistics.** A round is the unit: the requests of one phase in one round share "
        "the machine's speed in those seconds and one draw of arrivals, so they are not "
        "independent samples and no interval is computed from pooled requests. Each figure "
        "(a phase's p50 or p99, a round's mean burst latency) is computed per round; the "
        "tables give the median over rounds, a 95% confidence interval (Student's t on the "
        "logarithms of the per-round values, i.e. of their geometric mean; with "
        f"{rounds} rounds, {_dof(rounds)}, so the intervals are wide), and each round's "
        "value. A speedup is paired: the other system's value over "
        "auto's in the same round (same arrivals, same minutes), then summarized the same "
        "way; an interval that holds 1.00x means no difference was found. A p99 of a phase "
        "with few requests (41 at 2.7 req/s for 15 s) is close to its largest latency.",
        "",
    ]


def micro_section(session: Session, workdir: Path, plot: str) -> list[str]:
    opts = session.options
    if opts.get("no_bench"):
        return []
    lines = [
        "## Microbenchmark: Packrat's plan against the fat instance per batch size",
        "",
        "`run_bench`, what `packrat bench MODEL --batches "
        f"{opts['bench_batches']}` runs (every configuration's instances concurrently, batch "
        "latency end to end through `Engine.infer`: split, pinned workers, gather), with one "
        "warm-up run and at least 2 timed runs per configuration and batch size (more while "
        "they take under 2 s in all; the command itself takes at least 5), once per model "
        "before the rounds. Predicted: max_j L(t_j, b_j) from the profile (server's sampling: "
        "1 warm-up, at least 3 runs per cell). Mean +- 95% CI over the runs, ms.",
        "",
        f"![measured and predicted speedup per batch size]({plot})",
        "",
    ]
    for model in session.models:
        sums = micro_summaries(workdir, model)
        if not sums:
            continue
        lines += [
            f"### {model.model}",
            "",
            "| B | Packrat's plan | Packrat | fat | single-thread | best measured "
            "| speedup over fat | predicted | measured / predicted - 1 |",
            "| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        for s in sums:
            predicted = "-" if s.predicted_speedup is None else f"{s.predicted_speedup:.2f}x"
            lines.append(
                f"| {s.batch} | `{s.packrat.plan}` | {_ci(s.packrat)} | {_ci(s.fat)} "
                f"| {_ci(s.single)} | `{s.best.plan}` {_ci(s.best)} | {s.speedup_over_fat:.2f}x "
                f"| {predicted} | {_pct(gap(s))} |"
            )
        lines += ["", f"Mean speedup over fat: {mean_speedup(sums):.2f}x.", ""]
    return lines


def servers(session: Session, runs: dict[str, ModelRuns], chosen: list[System]) -> list[str]:
    lines = [
        "## Servers",
        "",
        "Per round, in round order. Start: from the command to ready (every worker up). "
        "Exit: Packrat's exit status after SIGTERM; TorchServe's `torchserve --stop`. Left: "
        "processes of the server (its workers included) alive after it stopped (killed "
        "then). Requests and failed: all rounds.",
        "",
        "| model | system | start, s | requests | failed | plan after the bursts or workers "
        "| exit | left |",
        "| --- | --- | --- | ---: | ---: | --- | --- | ---: |",
    ]
    for model in session.models:
        found = runs[model.model]
        for system in chosen:
            mine = [run for run in found.of(system.key) if run is not None]
            if not mine:
                continue
            starts = ", ".join(f"{run.start_s:.0f}" for run in mine)
            exits = ", ".join(str(run.exit_code) for run in mine)
            served = "; ".join(sorted({_served_as(run) for run in mine}))
            lines.append(
                f"| {model.model} | {system.name} | {starts} | {sum(r.sent() for r in mine)} "
                f"| {sum(r.failed() for r in mine)} | {served} | {exits} "
                f"| {sum(len(r.leftover_pids) for r in mine)} |"
            )
    return [*lines, ""]


def _served_as(run: SystemRun) -> str:
    described = run.described
    if not described:
        return "-" if not run.error else "failed"
    if "plan" in described:  # Packrat
        return f"`{described['plan']['describe']}`"
    workers = described.get("workers", [])
    ready = sum(w.get("status") == "READY" for w in workers)
    return (
        f"{ready} of {len(workers)} workers READY, batchSize {described.get('batchSize')}, "
        f"maxBatchDelay {described.get('maxBatchDelay')} ms"
    )


def evidence(session: Session, runs: dict[str, ModelRuns], chosen: list[System]) -> list[str]:
    names = {s.key: s.name for s in chosen if s.kind == "torchserve"}
    if not names:
        return []
    lines = [
        "## TorchServe really ran: lines from its logs",
        "",
        "From each TorchServe's `ts_log.log` and `model_log.log` in round 1 (every round's "
        "are in the work directory, under `runs/MODEL/SYSTEM/rROUND/torchserve/logs`): the "
        "model registered and loaded, its workers started, and the threads each worker's "
        "handler set.",
        "",
    ]
    for model in session.models:
        for key, name in names.items():
            run = runs[model.model].of(key)[0]
            if run is not None and run.evidence:
                lines += [f"{model.model}, {name}:", "", "```"]
                lines += [line.removeprefix("log: ") for line in run.evidence]
                lines += ["```", ""]
    return lines


def timing(session: Session) -> list[str]:
    lines = [
        "## Where the run's time went",
        "",
        "Load average: the machine's 1-minute load average when the stage ended; this run "
        f"keeps about {session.cores} cores busy, so more means other processes competed for "
        "them (this machine is shared).",
        "",
        "| model | stage | s | load average |",
        "| --- | --- | ---: | ---: |",
    ]
    for model in session.models:
        for stage, seconds in model.seconds.items():
            load = model.load_avg.get(stage, math.nan)
            lines.append(f"| {model.model} | {stage} | {seconds:.0f} | {load:.1f} |")
    lines.append(f"| all | total | {session.total_s:.0f} | |")
    return [*lines, ""]


def _dof(rounds: int) -> str:
    if rounds < 2:
        return "no interval (one round)"
    return f"{rounds - 1} degree{'s' if rounds > 2 else ''} of freedom: t = {t95(rounds - 1):.2f}"


def _ci(m: Measurement) -> str:
    return f"{m.stats.mean_ms:.1f} +-{m.stats.ci95_ms:.1f}"


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:+.1%}"


def switch_rule(session: Session) -> list[str]:
    """Why auto runs the plans it runs: its switch rule, and the profile's gains per batch."""
    lines = [
        "## Which plan `auto` runs",
        "",
        "`auto` starts on the optimizer's plan for the largest batch, then at each batch of b "
        "requests it switches to the optimizer's plan for b only when the profile says the "
        "batch would finish sooner on the new plan by more than the switch cost (a moving "
        "average of the switches measured, from 1 ms) plus "
        f"{SWITCH_MARGIN:.0%} of the new plan's predicted latency (`SWITCH_MARGIN = "
        f"{SWITCH_MARGIN}` in `packrat/controller/policy.py`: the first batch on re-threaded "
        "workers runs slower than the profile says). Two plans with the same instances are "
        "one plan (no switch; the batch is split over them). So once on the fat plan, auto "
        f"leaves it for a batch of b only if L(fat, b) / L(best plan, b) > {1 + SWITCH_MARGIN:.2f}"
        " + switch cost / L(best plan, b). By each model's profile (interpolated between its "
        "batch sizes, as the server plans):",
        "",
        "| model | b with a plan better than fat | largest L(fat) / L(plan), at b | "
        "can auto leave the fat plan? |",
        "| --- | --- | ---: | --- |",
    ]
    for model in session.models:
        gains = {b: g for b, p in model.every_batch.items() if math.isfinite(g := gain(p))}
        better = [b for b, g in gains.items() if g > 1.0 + 1e-9]
        if not gains:
            continue
        top = max(gains, key=lambda b: gains[b])
        plan = model.every_batch[top]["plan"]
        leaves = [b for b, g in gains.items() if g > 1.0 + SWITCH_MARGIN]
        verdict = (
            f"yes, for b = {numbers(leaves)}"
            if leaves
            else f"no: no plan is {SWITCH_MARGIN:.0%} faster for any b up to {max(gains)}"
        )
        lines.append(
            f"| {model.model} | {numbers(better) or 'none'} | {gains[top]:.3f}x (b = {top}, "
            f"`{plan}`) | {verdict} |"
        )
    lines += [
        "",
        "Where auto cannot leave the fat plan and starts on it (or reaches it at its "
        "first batch of 1, in the warm-up bursts), it runs the fat plan throughout: the "
        "tables below say in which phases and rounds it did.",
        "",
    ]
    return lines


def gain(predicted: dict[str, Any]) -> float:
    """The fat instance's predicted latency over the plan's (nan without the fat one's)."""
    fat = predicted.get("fat_ms")
    return fat / predicted["plan_ms"] if fat else math.nan


def numbers(items: list[int]) -> str:
    return ", ".join(str(i) for i in items)
