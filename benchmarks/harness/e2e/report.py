"""The end-to-end suite's report (Markdown), from its session and saved runs.

Every figure is per round first, then summarized over the rounds (harness/e2e/stats.py):
the median, a 95% confidence interval, and the rounds' own values. Speedup of Packrat (auto)
over a system = the system's value / auto's in the same round (above 1: Packrat faster). Where
auto ran the same plan as another Packrat system throughout a phase, the report says so
(harness/e2e/plans.py): those rows measure one plan twice.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from packrat.bench.report import mean_speedup

from harness.e2e.plans import PhasePlans, plans_text, same_plan_rounds, shape_name
from harness.e2e.plots import PLOTS
from harness.e2e.report_parts import (
    evidence,
    gain,
    method,
    micro_section,
    numbers,
    servers,
    switch_rule,
    timing,
)
from harness.e2e.runs import System
from harness.e2e.session import ModelSession, Session
from harness.e2e.stats import (
    ModelRuns,
    PlansOf,
    burst_ms,
    burst_plans,
    bursts_counted,
    gap,
    micro_summaries,
    rate_plans,
    rate_stat,
)
from harness.stats import Estimate


def render(
    session: Session, runs: dict[str, ModelRuns], chosen: list[System], workdir: Path
) -> str:
    rounds = session.options.get("rounds", 1)
    out = [
        "# End-to-end benchmarks: Packrat, the fat instance, single-thread instances and "
        "TorchServe (issue 5)",
        "",
        f"Measured {session.measured} on {session.machine or 'this machine'}; "
        + ", ".join(f"{k} {v}" for k, v in session.versions.items())
        + ".",
        "",
        f"Command: `{session.command}` (total {session.total_s / 60:.1f} min, from a fresh "
        f"work directory: nothing cached). {rounds} interleaved rounds; every server started "
        "afresh in each round and stopped after it. The systems ran in this order:",
        "",
        "| model | " + " | ".join(f"round {r}" for r in range(1, rounds + 1)) + " |",
        "| --- |" + " --- |" * rounds,
        *(
            f"| {m.model} | " + " | ".join(", ".join(o) for o in m.order) + " |"
            for m in session.models
        ),  # fmt: skip
        "",
        *method(session, chosen),
        *switch_rule(session),
        *_headline(session, runs, chosen, workdir),
        *micro_section(session, workdir, PLOTS["micro"]),
    ]
    for model in session.models:
        out += _model_section(model, runs[model.model], chosen, session)
    out += servers(session, runs, chosen)
    out += evidence(session, runs, chosen)
    out += timing(session)
    if session.notes:
        out += ["## Notes from the run", "", *(f"- {note}" for note in session.notes), ""]
    return "\n".join(out)


def _headline(
    session: Session, runs: dict[str, ModelRuns], chosen: list[System], workdir: Path
) -> list[str]:
    versus = [s for s in chosen if s.key == "fat" or s.kind == "torchserve"]
    lines = [
        "## Headline figures",
        "",
        "Speedup = the other system's latency / auto's in the same round, median over rounds "
        "[95% CI]. Microbenchmark: mean over batch sizes of the fat instance's batch latency "
        "over Packrat's plan's, measured and as the profile predicted (the paper: "
        "1.13x-1.53x on 16 cores), and the mean |measured / predicted - 1|. Bursts: per "
        "round, the geometric mean over N of the fat server's mean burst latency over auto's "
        "(the paper: 1.43x-1.83x end to end). Open loop: p50 at each offered rate (req/s). "
        "*Same plan*: auto ran the fat plan throughout, in every round, so that figure "
        "compares the fat plan with itself.",
        "",
        "| model | microbenchmark: measured / predicted | gap | bursts: auto vs fat "
        + "".join(f"| vs {s.name}, p50 per offered rate " for s in versus)
        + "|",
        "| --- | ---: | ---: | ---: " + "| ---: " * len(versus) + "|",
    ]
    for model in session.models:
        sums = micro_summaries(workdir, model)
        micro = gap_text = "-"
        if sums:
            predicted = [s.predicted_speedup for s in sums if s.predicted_speedup]
            mean_pred = statistics.fmean(predicted) if predicted else math.nan
            micro = f"{mean_speedup(sums):.2f}x / {mean_pred:.2f}x"
            gaps = [abs(gap(s)) for s in sums if math.isfinite(gap(s))]
            gap_text = f"{statistics.fmean(gaps):.1%}" if gaps else "-"
        found = runs[model.model]
        sizes = sorted(model.predicted)
        bursts = _est(found.mean_speedup("fat", [burst_ms(n) for n in sizes]), "x")
        if all(_same_all(found, "fat", burst_plans(n)) for n in sizes):
            bursts += " (*same plan* for every N)"
        cells = []
        for system in versus:
            per_rate = []
            for rate in model.rates_rps:
                cell = f"{_offered(found, rate)}: " + _est(
                    found.speedup(system.key, rate_stat(rate, "p50_ms")), "x"
                )
                if system.kind == "packrat" and _same_all(found, system.key, rate_plans(rate)):
                    cell += " (*same plan*)"
                per_rate.append(cell)
            cells.append("; ".join(per_rate))
        lines.append(
            f"| {model.model} | {micro} | {gap_text} | {bursts} | " + " | ".join(cells) + " |"
        )
    return [*lines, ""]


def _model_section(
    model: ModelSession, found: ModelRuns, chosen: list[System], session: Session
) -> list[str]:
    names = {s.key: s.name for s in chosen}
    fractions = [float(f) for f in str(session.options["fractions"]).split(",")]
    targets = dict(zip(model.rates_rps, fractions, strict=False))
    lines = [
        f"## {model.model}",
        "",
        f"Fat instance's capacity by the profile: {model.capacity_rps:.2f} req/s. Rates asked "
        "for (fraction of that) and offered (requests sent / the phase's "
        f"{session.options['phase_s']:g} s, each round): "
        + "; ".join(
            f"{rate:g} ({targets.get(rate, math.nan):g}x): "
            + ", ".join(_num(v) for v in found.values("auto", rate_stat(rate, "offered_rps")))
            for rate in model.rates_rps
        )
        + " req/s.",
        "",
        "### Open loop: latency (ms, from the scheduled send time)",
        "",
        "Median over rounds [95% CI] (each round's value). Sent: requests sent, all rounds; "
        "failed: of those, refused or failed. Batch: mean requests per batch (Packrat's "
        "metrics), median over rounds. Plans: what the Packrat server ran (share of the "
        "phase's time, all rounds).",
        "",
        "| offered req/s (asked) | system | sent | failed | p50 | p50 per round | p99 "
        "| p99 per round | batch | plans |",
        "| ---: | --- | ---: | ---: | ---: | --- | ---: | --- | ---: | --- |",
    ]
    for rate in model.rates_rps:
        label = f"{_offered(found, rate)} ({rate:g}, {targets.get(rate, math.nan):g}x)"
        for system in chosen:
            lines.append(_rate_row(found, rate, label, system, session.cores))
    lines += ["", *_same_plan_notes(found, chosen, model, session.cores), ""]
    others = [k for k in names if k != "auto"]
    lines += [
        "Speedup of Packrat (auto) over each system, paired by round: p50 ratio, then p99 "
        "ratio, median [95% CI].",
        "",
        "| offered req/s | " + " | ".join(names[k] for k in others) + " |",
        "| ---: |" + " ---: |" * len(others),
    ]
    for rate in model.rates_rps:
        cells = [
            _est(found.speedup(k, rate_stat(rate, "p50_ms")), "x")
            + " / "
            + _est(found.speedup(k, rate_stat(rate, "p99_ms")), "x")
            for k in others
        ]
        lines.append(f"| {_offered(found, rate)} | " + " | ".join(cells) + " |")
    return [*lines, "", *_burst_section(model, found, chosen, session.cores)]


def _rate_row(found: ModelRuns, rate: float, label: str, system: System, cores: int) -> str:
    key = system.key
    sent = sum(_int(v) for v in found.values(key, rate_stat(rate, "sent")))
    failed = sum(_int(v) for v in found.values(key, rate_stat(rate, "failed")))
    p50 = found.estimate(key, rate_stat(rate, "p50_ms"))
    p99 = found.estimate(key, rate_stat(rate, "p99_ms"))
    phases = found.phase_plans(key, rate_plans(rate))
    plans = plans_text(phases, cores) if system.kind == "packrat" else "-"
    return (
        f"| {label} | {system.name} | {sent} | {failed} | {_est(p50)} | {_rounds(p50)} "
        f"| {_est(p99)} | {_rounds(p99)} | {_batch(phases)} | {plans} |"
    )


def _burst_section(
    model: ModelSession, found: ModelRuns, chosen: list[System], cores: int
) -> list[str]:
    names = {s.key: s.name for s in chosen}
    others = [k for k in names if k != "auto"]
    lines = [
        "### Bursts: mean latency of a batch of N, send to last answer (ms)",
        "",
        "Median over rounds [95% CI] of each round's mean over its bursts (each round's "
        "value); bursts: measured without a failure, all rounds; batch: mean requests per "
        "batch (Packrat's metrics; TorchServe's from its handler's time, which every request "
        "of one batch carries), median over rounds.",
        "",
        "| N | system | bursts | mean | per round | batch | plans |",
        "| ---: | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for n in sorted(model.predicted):
        for system in chosen:
            estimate = found.estimate(system.key, burst_ms(n))
            counted = sum(_int(v) for v in found.values(system.key, bursts_counted(n)))
            phases = found.phase_plans(system.key, burst_plans(n))
            plans = plans_text(phases, cores) if system.kind == "packrat" else "-"
            batch = _batch(phases) if system.kind == "packrat" else _ts_batch(found, system, n)
            lines.append(
                f"| {n} | {system.name} | {counted} | {_est(estimate)} | {_rounds(estimate)} "
                f"| {batch} | {plans} |"
            )
    lines += [
        "",
        *_same_plan_notes(found, chosen, model, cores, bursts=True),
        "",
        "Speedup of Packrat (auto) per N, paired by round, median [95% CI]; the plan the "
        "profile gives for N and its predicted speedup over the fat instance.",
        "",
        "| N | plan (profile) | predicted: fat / plan | "
        + " | ".join(f"vs {names[k]}" for k in others)
        + " |",
        "| ---: | --- | ---: |" + " ---: |" * len(others),
    ]
    for n, pred in sorted(model.predicted.items()):
        cells = [_est(found.speedup(k, burst_ms(n)), "x") for k in others]
        lines.append(f"| {n} | `{pred['plan']}` | {_x(gain(pred))} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _same_plan_notes(
    found: ModelRuns, chosen: list[System], model: ModelSession, cores: int, bursts: bool = False
) -> list[str]:
    """A plain statement for each Packrat system whose plan auto ran throughout some phases."""
    phases: list[tuple[str, PlansOf]] = (
        [(f"N = {n}", burst_plans(n)) for n in sorted(model.predicted)]
        if bursts
        else [(f"{_offered(found, r)} req/s", rate_plans(r)) for r in model.rates_rps]
    )
    what = "bursts" if bursts else "open-loop phases"
    notes = []
    for system in chosen:
        if system.kind != "packrat" or system.key == "auto":
            continue
        same: dict[str, list[int]] = {}
        ran = ""
        for label, plans in phases:
            mine = found.phase_plans("auto", plans)
            rounds = same_plan_rounds(mine, found.phase_plans(system.key, plans))
            if rounds:
                same[label] = rounds
                only = mine[rounds[0] - 1].only()  # a round where both ran one plan
                ran = shape_name(only, cores) if only else ran
        if not same:
            continue
        every = all(len(r) == found.rounds for r in same.values()) and len(same) == len(phases)
        where = (
            f"in every one of its {what} and all {found.rounds} rounds"
            if every
            else "; ".join(f"at {label} in round{_s(r)} {numbers(r)}" for label, r in same.items())
        )
        notes.append(
            f"**Same plan: auto and {system.name}.** auto ran {ran} throughout, with no "
            f"switch, {where}: there, these two rows measure the same plan, and their "
            "difference is the machine's noise (two servers, started minutes apart)."
        )
    return notes or [
        f"auto ran no other Packrat system's plan throughout any of its {what} (plans column)."
    ]


def _same_all(found: ModelRuns, key: str, plans: PlansOf) -> bool:
    rounds = same_plan_rounds(found.phase_plans("auto", plans), found.phase_plans(key, plans))
    return len(rounds) == found.rounds


def _offered(found: ModelRuns, rate: float) -> str:
    """The offered rate of a phase, median over the rounds and systems that ran it."""
    values = [v for run in found.runs() if math.isfinite(v := rate_stat(rate, "offered_rps")(run))]
    return _num(statistics.median(values)) if values else "-"


def _batch(phases: list[PhasePlans | None]) -> str:
    sizes = [p.batch_size for p in phases if p is not None and p.batch_size is not None]
    return f"{statistics.median(sizes):.2f}" if sizes else "-"


def _ts_batch(found: ModelRuns, system: System, n: int) -> str:
    """Requests per batch in TorchServe's bursts of `n`, from its handler's time (every
    request of one batch carries the same), median over rounds."""
    sizes = []
    for run in found.of(system.key):
        result = None if run is None else run.bursts.get(n)
        if result is None:
            continue
        batches: dict[float, set[float | None]] = {}
        for r in result.records:
            batches.setdefault(round(r.scheduled_s, 6), set()).add(r.compute_ms)
        count = sum(len(values) for values in batches.values())
        if count:
            sizes.append(len(result.records) / count)
    return f"{statistics.median(sizes):.2f}" if sizes else "-"


def _est(e: Estimate, unit: str = "") -> str:
    """`median [low-high]`, in ms (unit "") or as a speedup (unit "x")."""
    if not math.isfinite(e.median):
        return "-"
    fmt = _x if unit == "x" else _ms
    if not math.isfinite(e.low):
        return fmt(e.median)
    return f"{fmt(e.median)} [{fmt(e.low).rstrip('x')}-{fmt(e.high)}]"


def _rounds(e: Estimate) -> str:
    return ", ".join(_ms(v) for v in e.values)


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    if value >= 1e5 or value < 0.1:  # only a wide interval's bound: its size is what matters
        return f"{value:.1e}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _x(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    if value >= 1e3 or 0 < value < 0.01:  # only a wide interval's bound
        return f"{value:.1e}x"
    return f"{value:.0f}x" if value >= 100 else f"{value:.2f}x"


def _num(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3g}"


def _int(value: float) -> int:
    return int(value) if math.isfinite(value) else 0


def _s(items: list[int]) -> str:
    return "s" if len(items) > 1 else ""
