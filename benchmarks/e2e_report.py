"""The end-to-end suite's report (Markdown) and plots, from its session and saved runs.

Speedup of Packrat (auto) over a system = the system's latency / Packrat's, at the same
statistic (p50 or p99 in the open loop, the mean batch latency for bursts and the
microbenchmark): above 1, Packrat is faster.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2e_runs import WARM_BATCHES, System, SystemRun, burst_latencies_ms
from serving import cpu_model

from packrat.bench.loadgen import LoadResult
from packrat.bench.offline import Measurement
from packrat.bench.report import BatchSummary, mean_speedup, summarize_batches
from packrat.profiler.stats import CellStats

if TYPE_CHECKING:
    from e2e import ModelSession, Session

PLOTS = {
    "rates": "latency-vs-rate.png",
    "batches": "batch-speedup.png",
    "micro": "micro-speedup.png",
}


# --- numbers ----------------------------------------------------------------------------------


def micro_summaries(workdir: Path, model: ModelSession) -> list[BatchSummary]:
    """Per batch size, Packrat's plan against the fat instance, from the microbenchmark."""
    path = workdir / model.micro_file
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    found = []
    for raw in saved["measurements"]:
        fields = {**raw, "roles": tuple(raw["roles"]), "stats": CellStats(**raw["stats"])}
        found.append(Measurement(**fields))
    return summarize_batches(found) if found else []


def gap(summary: BatchSummary) -> float:
    """Measured speedup over predicted, minus 1 (-0.05: 5% less speedup than predicted)."""
    predicted = summary.predicted_speedup
    return math.nan if not predicted else summary.speedup_over_fat / predicted - 1.0


def burst_ms(run: SystemRun | None, n: int) -> float:
    """Mean latency of a burst of `n`: from its send to its last answer."""
    result = None if run is None else run.bursts.get(n)
    latencies = [] if result is None else burst_latencies_ms(result)
    return statistics.fmean(latencies) if latencies else math.nan


def rate_stat(run: SystemRun | None, rate: float, stat: str) -> float:
    """p50_ms, p90_ms, p99_ms (or throughput_rps) of a run at `rate`; nan if none."""
    result = None if run is None else run.rates.get(rate)
    if result is None:
        return math.nan
    summary = result.summary().overall
    if stat == "throughput_rps":
        return summary.throughput_rps
    return math.nan if summary.latency is None else float(getattr(summary.latency, stat))


def ratio(theirs: float, ours: float) -> float:
    return theirs / ours if ours > 0 and math.isfinite(theirs) and math.isfinite(ours) else math.nan


def by_key(runs: Sequence[SystemRun]) -> dict[str, SystemRun]:
    return {run.system: run for run in runs}


def burst_speedups(model_runs: Sequence[SystemRun], versus: str) -> list[float]:
    """`versus`'s mean burst latency over auto's, per batch size (finite only)."""
    found = by_key(model_runs)
    auto, other = found.get("auto"), found.get(versus)
    if auto is None or other is None:
        return []
    values = [ratio(burst_ms(other, n), burst_ms(auto, n)) for n in sorted(auto.bursts)]
    return [v for v in values if math.isfinite(v)]


# --- the report -------------------------------------------------------------------------------


def render(
    session: Session, runs: dict[str, list[SystemRun]], chosen: list[System], workdir: Path
) -> str:
    opts = session.options
    out = [
        "# End-to-end benchmarks: Packrat, the fat instance, single-thread instances and "
        "TorchServe (issue 5)",
        "",
        f"Measured {session.measured} on {platform.node() or 'this machine'}: {cpu_model()}, "
        f"{session.cores} usable cores, Linux {platform.release()}; "
        + ", ".join(f"{k} {v}" for k, v in session.versions.items())
        + ".",
        "",
        f"Command: `{session.command}` (total {session.total_s / 60:.1f} min, from a fresh "
        "work directory: nothing cached).",
        "",
        *_method(session, chosen),
        *_headline(session, runs, chosen, workdir),
        *_micro_section(session, workdir),
    ]
    for model in session.models:
        out += _model_section(model, runs.get(model.model, []), chosen, opts)
    out += _servers(session, runs, chosen)
    out += _evidence(session, runs, chosen)
    out += _timing(session)
    if session.notes:
        out += ["## Notes from the run", "", *(f"- {note}" for note in session.notes), ""]
    return "\n".join(out)


def _method(session: Session, chosen: list[System]) -> list[str]:
    opts = session.options
    t = session.cores
    lines = [
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
        "| system | how it is started |",
        "| --- | --- |",
        *(f"| {s.name} | {s.settings} |" for s in chosen),
        "",
        "Packrat: `--max-batch-size` and `--max-batch-delay` as above; `auto` runs each batch on "
        "the optimizer's plan for its size; the fat plan is one instance with every core; "
        f"`<{t},1,...>` pins {t} single-thread instances, each batch split across them. "
        "TorchServe 0.12: the same model exported with `packrat export` (TorchScript, same "
        "graph and weights), archived with `benchmarks/torchserve/raw_tensor_handler.py`, "
        "registered through the management API with `initial_workers`, `batch_size` and "
        "`max_batch_delay`. Threads, as a user sets them: one worker keeps torch's default of "
        f"one intra-op thread per core ({t}); {t} workers get one thread each "
        "(`OMP_NUM_THREADS=1`, and `torch.set_num_threads(1)` in the handler's `initialize`). "
        "TorchServe does not pin workers to cores (it can only through IPEX's launcher, "
        "`cpu_launcher_enable`), and sends a whole batch to one worker. Its handler writes "
        "each answer with orjson from the numpy row, as Packrat's server does, so both spend "
        "the same on JSON (TorchServe's usual `tolist()` + `json.dumps` takes tens of ms for "
        "BERT's and GPT-2's 98,304 output values).",
        "",
        "Bursts (latency per batch size, like the paper's Figure 5): N requests sent at once, "
        "the next burst when all N are answered, for N = 1, 2, 4, ... "
        f"{opts['max_batch_size']}: every batch should hold N requests (last column, in the "
        "order of the systems: Packrat's from its `packrat_batch_size` metric, TorchServe's "
        "from its handler's time, one value per batch that each of its requests carries); "
        "the batcher waits the "
        f"batch delay ({opts['max_batch_delay']} ms) for more when N < "
        f"{opts['max_batch_size']}, on every system alike. {WARM_BATCHES} warm-up bursts, then "
        f"{opts['bursts']} measured; latency of a burst = from its send to its last answer "
        "(a batch's latency, end to end), averaged. (Closed loops of N clients do not keep "
        "batches at N: Packrat answers each instance's part of a batch when it is done, so "
        "the clients come back at different times; a first try with 8 clients gave batches "
        "of 5.3 on average.)",
        "",
        f"Open loop: Poisson arrivals for {opts['phase_s']:g} s per rate (seeded: the same "
        "arrival times for every system), rates ascending, each started once the previous "
        "one's answers are all in; latency counts from each request's *scheduled* send time "
        "(no coordinated omission); throughput = answers per second of the phase. Rates are "
        f"fractions ({opts['fractions']}) of the fat instance's capacity, "
        f"{opts['max_batch_size']} / L({t}, {opts['max_batch_size']}) from the model's "
        "profile (the one every Packrat server here planned with). Both servers queue at most "
        "100 requests per model and refuse more (503), counted as failures.",
        "",
    ]
    return lines


def _headline(
    session: Session, runs: dict[str, list[SystemRun]], chosen: list[System], workdir: Path
) -> list[str]:
    ts = [s for s in chosen if s.kind == "torchserve"]
    lines = [
        "## Headline figures",
        "",
        "Speedup = the other system's latency / Packrat's (above 1: Packrat faster). "
        "Microbenchmark: mean over batch sizes of the fat instance's batch latency over "
        "Packrat's plan's, measured and as the profile predicted (the paper: 1.13x-1.53x on "
        "16 cores), and the mean |measured / predicted - 1|. Bursts: mean over N of the fat "
        "server's mean burst latency over auto's (the paper: 1.43x-1.83x end to end). "
        "Against TorchServe: p50 and p99 at each rate.",
        "",
        "| model | microbenchmark: measured / predicted | gap | bursts: auto vs fat "
        + "".join(f"| vs {s.name}, p50 (p99) per rate " for s in ts)
        + "|",
        "| --- | ---: | ---: | ---: " + "| ---: " * len(ts) + "|",
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
        model_runs = runs.get(model.model, [])
        fat = burst_speedups(model_runs, "fat")
        closed = f"{statistics.fmean(fat):.2f}x" if fat else "-"
        found = by_key(model_runs)
        cells = []
        for system in ts:
            per_rate = []
            for rate in model.rates_rps:
                p50 = _speedup(found, system.key, rate, "p50_ms")
                p99 = _speedup(found, system.key, rate, "p99_ms")
                per_rate.append(f"{rate:g}: {p50} ({p99})")
            cells.append("; ".join(per_rate))
        lines.append(
            f"| {model.model} | {micro} | {gap_text} | {closed} | " + " | ".join(cells) + " |"
        )
    return [*lines, ""]


def _speedup(found: dict[str, SystemRun], key: str, rate: float, stat: str) -> str:
    value = ratio(rate_stat(found.get(key), rate, stat), rate_stat(found.get("auto"), rate, stat))
    return _x(value)


def _micro_section(session: Session, workdir: Path) -> list[str]:
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
        "they take under 2 s in all; the command itself takes at least 5). Predicted: "
        "max_j L(t_j, b_j) from the profile (server's sampling: 1 warm-up, at least 3 runs "
        "per cell). Mean +- 95% CI, ms.",
        "",
        f"![measured and predicted speedup per batch size]({PLOTS['micro']})",
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


def _model_section(
    model: ModelSession, runs: list[SystemRun], chosen: list[System], opts: dict[str, Any]
) -> list[str]:
    found = by_key(runs)
    names = {s.key: s.name for s in chosen}
    fractions = [float(f) for f in str(opts["fractions"]).split(",")]
    lines = [
        f"## {model.model}",
        "",
        f"Fat instance's capacity by the profile: {model.capacity_rps:.2f} req/s; rates "
        + ", ".join(f"{r:g} ({f:g}x)" for r, f in zip(model.rates_rps, fractions, strict=False))
        + " req/s.",
        "",
        "### Open loop: latency (ms, from the scheduled send time) and throughput",
        "",
        "| rate, req/s | system | sent | failed | answers/s | p50 | p90 | p99 | batch |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate in model.rates_rps:
        for system in chosen:
            run = found.get(system.key)
            result = None if run is None else run.rates.get(rate)
            lines.append(_rate_row(rate, system.name, result, run))
    lines += [
        "",
        "Speedup of Packrat (auto) over each system: p50 ratio / p99 ratio.",
        "",
        "| rate, req/s | " + " | ".join(names[k] for k in names if k != "auto") + " |",
        "| ---: |" + " ---: |" * (len(names) - 1),
    ]
    for rate in model.rates_rps:
        cells = [
            f"{_speedup(found, key, rate, 'p50_ms')} / {_speedup(found, key, rate, 'p99_ms')}"
            for key in names
            if key != "auto"
        ]
        lines.append(f"| {rate:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Bursts: mean latency of a batch of N, send to last answer (ms)",
        "",
        "| N | plan (profile) | predicted: fat / plan | "
        + " | ".join(names.values())
        + " | auto vs fat | requests per batch, each system |",
        "| ---: | --- | ---: |" + " ---: |" * len(names) + " ---: | ---: |",
    ]
    auto = found.get("auto")
    for n, pred in sorted(model.predicted.items()):
        cells = [_ms(burst_ms(found.get(key), n)) for key in names]
        speed = ratio(burst_ms(found.get("fat"), n), burst_ms(auto, n))
        fat_ms = pred.get("fat_ms")
        predicted = "-" if not fat_ms else _x(fat_ms / pred["plan_ms"])
        batch = " / ".join(_batch(found.get(key), n) for key in names)
        lines.append(
            f"| {n} | `{pred['plan']}` | {predicted} | " + " | ".join(cells)
            + f" | {_x(speed)} | {batch} |"
        )  # fmt: skip
    return [*lines, ""]


def _batch(run: SystemRun | None, n: int) -> str:
    """Mean requests per batch in the bursts of `n`: Packrat's from its metrics; TorchServe's
    from its handler's time, which every request of one batch carries (one batch, one
    value)."""
    if run is None:
        return "-"
    size = run.burst_batch_size.get(n)
    result = run.bursts.get(n)
    if size is None and result is not None:
        bursts: dict[float, set[float | None]] = {}
        for r in result.records:
            bursts.setdefault(round(r.scheduled_s, 6), set()).add(r.compute_ms)
        batches = sum(len(values) for values in bursts.values())
        size = len(result.records) / batches if batches else None
    return "-" if size is None else f"{size:.2f}"


def _rate_row(rate: float, name: str, result: LoadResult | None, run: SystemRun | None) -> str:
    if result is None:
        return f"| {rate:g} | {name} | - | - | - | - | - | - | - |"
    s = result.summary().overall
    lat = s.latency
    stats = ["-"] * 3 if lat is None else [_ms(lat.p50_ms), _ms(lat.p90_ms), _ms(lat.p99_ms)]
    batch = "-"
    if run is not None and rate in run.rate_batch_size:
        batch = f"{run.rate_batch_size[rate]:.2f}"
    return (
        f"| {rate:g} | {name} | {s.sent} | {s.failed} | {s.throughput_rps:.2f} | "
        + " | ".join(stats)
        + f" | {batch} |"
    )


def _servers(session: Session, runs: dict[str, list[SystemRun]], chosen: list[System]) -> list[str]:
    names = {s.key: s.name for s in chosen}
    lines = [
        "## Servers",
        "",
        "Start: from the command to ready (every worker up). Exit: Packrat's exit status after "
        "SIGTERM; TorchServe's `torchserve --stop`. Left: processes of the server (its workers "
        "included) alive after it stopped (killed then).",
        "",
        "| model | system | start, s | requests | failed | plan or workers | exit | left |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for model in session.models:
        for run in runs.get(model.model, []):
            lines.append(
                f"| {model.model} | {names.get(run.system, run.system)} | {run.start_s:.0f} "
                f"| {run.sent()} | {run.failed()} | {_served_as(run)} | {run.exit_code} "
                f"| {len(run.leftover_pids)} |"
            )
    return [*lines, ""]


def _served_as(run: SystemRun) -> str:
    described = run.described
    if not described:
        return "-" if not run.error else "failed"
    if "plan" in described:  # Packrat
        switches = sum(run.rate_switches.values())
        extra = f", {switches:.0f} switches under open load" if run.system == "auto" else ""
        return f"`{described['plan']['describe']}` after the bursts{extra}"
    workers = described.get("workers", [])
    ready = sum(w.get("status") == "READY" for w in workers)
    return (
        f"{ready} of {len(workers)} workers READY, batchSize {described.get('batchSize')}, "
        f"maxBatchDelay {described.get('maxBatchDelay')} ms"
    )


def _evidence(
    session: Session, runs: dict[str, list[SystemRun]], chosen: list[System]
) -> list[str]:
    names = {s.key: s.name for s in chosen if s.kind == "torchserve"}
    if not names:
        return []
    lines = [
        "## TorchServe really ran: lines from its logs",
        "",
        "From each TorchServe's `ts_log.log` and `model_log.log` (in the work directory, under "
        "`runs/MODEL/SYSTEM/torchserve/logs`): the model registered and loaded, its workers "
        "started, and the threads each worker's handler set.",
        "",
    ]
    for model in session.models:
        for run in runs.get(model.model, []):
            if run.system in names and run.evidence:
                lines += [f"{model.model}, {names[run.system]}:", "", "```"]
                lines += [line.removeprefix("log: ") for line in run.evidence]
                lines += ["```", ""]
    return lines


def _timing(session: Session) -> list[str]:
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


def _ci(m: Measurement) -> str:
    return f"{m.stats.mean_ms:.1f} +-{m.stats.ci95_ms:.1f}"


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _x(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2f}x"


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:+.1%}"


# --- plots ------------------------------------------------------------------------------------


def write_plots(
    session: Session,
    runs: dict[str, list[SystemRun]],
    chosen: list[System],
    workdir: Path,
    folder: Path,
) -> None:
    """latency-vs-rate.png, batch-speedup.png and (with the microbenchmark) micro-speedup.png
    in `folder`, one panel per model."""
    _plot_rates(session, runs, chosen, folder / PLOTS["rates"])
    _plot_batches(session, runs, chosen, folder / PLOTS["batches"])
    if not session.options.get("no_bench"):
        _plot_micro(session, workdir, folder / PLOTS["micro"])


def _figure(panels: int, title: str) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * panels, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, panels, k + 1) for k in range(panels)]
    fig.suptitle(title)
    return fig, axes


def _plot_rates(
    session: Session, runs: dict[str, list[SystemRun]], chosen: list[System], path: Path
) -> None:
    fig, axes = _figure(len(session.models), "Latency against arrival rate (open loop, Poisson)")
    for ax, model in zip(axes, session.models, strict=True):
        found = by_key(runs.get(model.model, []))
        for k, system in enumerate(chosen):
            color = f"C{k}"
            rates = model.rates_rps
            p50 = [rate_stat(found.get(system.key), r, "p50_ms") for r in rates]
            p99 = [rate_stat(found.get(system.key), r, "p99_ms") for r in rates]
            ax.plot(rates, p50, marker="o", color=color, label=f"{system.name} p50")
            ax.plot(rates, p99, marker="x", linestyle="--", color=color, label=f"{system.name} p99")
        ax.set_yscale("log")
        ax.set_xlabel("arrival rate, req/s")
        ax.set_ylabel("latency, ms")
        ax.set_title(model.model)
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig, axes)
    fig.savefig(path, format="png", dpi=110)


def _plot_batches(
    session: Session, runs: dict[str, list[SystemRun]], chosen: list[System], path: Path
) -> None:
    title = "Speedup of Packrat (auto) per batch size: bursts of N requests, end to end"
    fig, axes = _figure(len(session.models), title)
    others = [s for s in chosen if s.key != "auto"]
    for ax, model in zip(axes, session.models, strict=True):
        found = by_key(runs.get(model.model, []))
        auto = found.get("auto")
        batches = sorted(model.predicted)
        series: list[tuple[str, list[float]]] = []
        fat_ms = [model.predicted[n].get("fat_ms") or math.nan for n in batches]
        plan_ms = [model.predicted[n]["plan_ms"] for n in batches]
        series.append(
            ("over fat, predicted", [f / p for f, p in zip(fat_ms, plan_ms, strict=True)])
        )
        for system in others:
            values = [ratio(burst_ms(found.get(system.key), n), burst_ms(auto, n))
                      for n in batches]  # fmt: skip
            series.append((f"over {system.name}", values))
        width = 0.8 / len(series)
        for k, (label, values) in enumerate(series):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(batches))]
            hatch = "//" if "predicted" in label else None
            ax.bar(xs, [v if math.isfinite(v) else 0.0 for v in values], width, label=label,
                   hatch=hatch)  # fmt: skip
        _speedup_axes(ax, model.model, batches, "batch size N (bursts of N requests)")
        ax.set_ylabel("speedup of Packrat (auto)")
    _legend(fig, axes)
    fig.savefig(path, format="png", dpi=110)


def _plot_micro(session: Session, workdir: Path, path: Path) -> None:
    title = "Microbenchmark: Packrat's plan over the fat instance, measured and predicted"
    fig, axes = _figure(len(session.models), title)
    for ax, model in zip(axes, session.models, strict=True):
        sums = micro_summaries(workdir, model)
        pos = range(len(sums))
        width = 0.38
        measured = [s.speedup_over_fat for s in sums]
        predicted = [s.predicted_speedup or 0.0 for s in sums]
        ax.bar([p - width / 2 for p in pos], measured, width, label="measured")
        ax.bar([p + width / 2 for p in pos], predicted, width, label="predicted by profile")
        _speedup_axes(ax, model.model, [s.batch for s in sums], "batch size B")
        ax.set_ylabel("speedup over the fat instance")
    _legend(fig, axes)
    fig.savefig(path, format="png", dpi=110)


def _legend(fig: Any, axes: list[Any]) -> None:
    """One legend for all panels, below them (the panels share their series)."""
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=5, fontsize=8)


def _speedup_axes(ax: Any, title: str, batches: Sequence[int], xlabel: str) -> None:
    """A speedup bar chart's frame: the line at 1, a tick per batch size, labels, grid."""
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(batches)), [str(n) for n in batches])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
