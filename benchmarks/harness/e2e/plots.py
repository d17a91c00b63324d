"""The end-to-end suite's plots (benchmarks/e2e.py), one panel per model: latency against the
offered rate, auto's speedup per burst size, and the microbenchmark's speedups. Medians over
rounds, with the range of the rounds' values as error bars (the report's tables give the 95%
confidence intervals, which with 3 rounds can span orders of magnitude and would flatten the
plots)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.e2e.runs import System
from harness.e2e.session import Session
from harness.e2e.stats import ModelRuns, burst_ms, micro_summaries, rate_stat
from harness.stats import Estimate

PLOTS = {
    "rates": "latency-vs-rate.png",
    "batches": "batch-speedup.png",
    "micro": "micro-speedup.png",
}


def write_plots(
    session: Session, runs: dict[str, ModelRuns], chosen: list[System], workdir: Path, folder: Path
) -> None:
    """latency-vs-rate.png, batch-speedup.png and (with the microbenchmark) micro-speedup.png
    in `folder`."""
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
    fig.suptitle(title, fontsize=10 if panels > 1 else 8)
    return fig, axes


def _errors(estimates: Sequence[Estimate]) -> list[list[float]]:
    """Matplotlib's asymmetric error bars: the rounds' range around each median."""
    below, above = [], []
    for e in estimates:
        values = [v for v in e.values if math.isfinite(v)]
        ok = bool(values) and math.isfinite(e.median)
        below.append(e.median - min(values) if ok else 0.0)
        above.append(max(values) - e.median if ok else 0.0)
    return [below, above]


def _plot_rates(
    session: Session, runs: dict[str, ModelRuns], chosen: list[System], path: Path
) -> None:
    title = "Latency against offered rate (open loop): median over rounds, bars: their range"
    fig, axes = _figure(len(session.models), title)
    for ax, model in zip(axes, session.models, strict=True):
        found = runs[model.model]
        for k, system in enumerate(chosen):
            offered = [found.estimate(system.key, rate_stat(r, "offered_rps")).median
                       for r in model.rates_rps]  # fmt: skip
            for stat, marker, style in (("p50_ms", "o", "-"), ("p99_ms", "x", "--")):
                values = [found.estimate(system.key, rate_stat(r, stat)) for r in model.rates_rps]
                ax.errorbar(offered, [e.median for e in values], yerr=_errors(values),
                            marker=marker, linestyle=style, color=f"C{k}", capsize=3,
                            label=f"{system.name} {stat.removesuffix('_ms')}")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("offered rate, req/s (requests sent / phase seconds)")
        ax.set_ylabel("latency, ms")
        ax.set_title(model.model)
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig, axes)
    fig.savefig(path, format="png", dpi=110)


def _plot_batches(
    session: Session, runs: dict[str, ModelRuns], chosen: list[System], path: Path
) -> None:
    title = "Speedup of auto per burst size N, paired by round: median, bars: the rounds' range"
    fig, axes = _figure(len(session.models), title)
    others = [s for s in chosen if s.key != "auto"]
    for ax, model in zip(axes, session.models, strict=True):
        found = runs[model.model]
        batches = sorted(model.predicted)
        fat_ms = [model.predicted[n].get("fat_ms") or math.nan for n in batches]
        plan_ms = [model.predicted[n]["plan_ms"] for n in batches]
        predicted = [Estimate.of([f / p]) for f, p in zip(fat_ms, plan_ms, strict=True)]
        series: list[tuple[str, list[Estimate]]] = [("over fat, predicted", predicted)]
        for system in others:
            series.append(
                (f"over {system.name}", [found.speedup(system.key, burst_ms(n)) for n in batches])
            )
        width = 0.8 / len(series)
        for k, (label, values) in enumerate(series):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(batches))]
            heights = [v.median if math.isfinite(v.median) else 0.0 for v in values]
            hatch = "//" if "predicted" in label else None
            ax.bar(xs, heights, width, yerr=_errors(values), capsize=2, label=label, hatch=hatch)
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
    ncols = 5 if len(axes) > 1 else 2
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8)


def _speedup_axes(ax: Any, title: str, batches: Sequence[int], xlabel: str) -> None:
    """A speedup bar chart's frame: the line at 1, a tick per batch size, labels, grid."""
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(batches)), [str(n) for n in batches])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
