"""The report of benchmarks/backends_side_by_side.py: the measurements it keeps (`Session`,
`ModelRun`), the Markdown (per model a table of every batch size, then the peak section) and
the plot beside it (per model: latency against batch size for every system, and the best
single-process system over Packrat, with 95% CIs).

Every latency is per round first (the median batch of a system's timed batches), then
summarized over rounds by `harness.stats.Estimate`: the median and the 95% CI of the geometric
mean. Best / packrat is paired by round: in each round, the single-process system with the
lowest median over the other rounds (one configuration, as a user would pick it from
measurements of their own), its median in that round over Packrat's. (Taking in each round
whichever system was fastest, or the one fastest over the very rounds it is scored on, would
favour the single-process side: the least of several equally fast, noisy systems is biased
low.) The table names the system fastest over all rounds.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.report import cpu_model, kept_analysis, package_versions
from harness.stats import Estimate

SYSTEMS = ("packrat", "ov-latency", "ov-throughput", "ort-default", "torch-fat")
SINGLE = SYSTEMS[1:]
"""The single-process systems Packrat is set against."""


@dataclass
class ModelRun:
    """One model: what serve runs it on, its plans, and every system's measurements.

    plans, predicted_ms: Packrat's plan for each batch size and its predicted latency.
    properties: per system, the settings it reported once built (threads, streams,
        precision "fp32" or "bf16").
    unavailable: per system that could not be measured (or stopped), why.
    medians: per system and batch size, each round's median batch latency (ms; nan: none).
    notes: per system and batch size, each round's note (Packrat: the plan run;
        ov-throughput: the infer requests used).
    samples: every timed batch, as {"round", "batch", "system", "ms": [...], "note"}.
    """

    model: str
    served: str
    reason: str
    profile: str
    batches: list[int]
    plans: dict[int, str]
    predicted_ms: dict[int, float]
    unavailable: dict[str, str]
    properties: dict[str, dict[str, str]] = field(default_factory=dict)
    flops_per_request: float = math.nan
    medians: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    notes: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def estimate(self, system: str, batch: int) -> Estimate:
        return Estimate.of(self.medians.get(system, {}).get(batch, []))

    def best_single(self, batch: int) -> list[float]:
        """Per round, the median of the single-process system with the lowest median over
        the *other* rounds (over all of them when there is one; nan where none ran). The
        system is picked on rounds it is not scored on: picked and scored on the same rounds,
        the least of several equally fast systems is whichever was lucky in them (on this
        machine, three runtimes at the roofline read ~6% faster than each one does)."""
        rounds = len(self.medians["packrat"][batch])
        found = []
        for n in range(rounds):
            best = self.fastest(batch, SINGLE, [k for k in range(rounds) if k != n] or [n])
            found.append(self.medians[best][batch][n] if best is not None else math.nan)
        return found

    def ratio(self, batch: int, system: str | None = None) -> Estimate:
        """Best single-process (or `system`, held fixed) / packrat, paired by round (above 1:
        Packrat is faster)."""
        ours = self.medians["packrat"][batch]
        theirs = self.best_single(batch) if system is None else self.medians[system][batch]
        return Estimate.of([b / p for b, p in zip(theirs, ours, strict=True)])

    def overall(self, system: str | None = None) -> Estimate:
        """Best single-process (or `system`, held fixed) / packrat over every batch size: per
        batch size the geometric mean of its rounds' ratios, then the median of those and the
        95% CI of their geometric mean (the batch sizes as the replicates)."""
        means = []
        for batch in self.batches:
            ratios = [v for v in self.ratio(batch, system).values if math.isfinite(v) and v > 0]
            if ratios:
                means.append(math.exp(statistics.fmean(math.log(v) for v in ratios)))
        return Estimate.of(means)

    def fastest(
        self, batch: int, systems: Sequence[str], rounds: Sequence[int] | None = None
    ) -> str | None:
        """The one of `systems` with the lowest median over `rounds` (indices; default all),
        None if none ran in them."""
        found = []
        for system in (s for s in systems if s in self.medians):
            values = self.medians[system][batch]
            taken = [values[n] for n in (range(len(values)) if rounds is None else rounds)]
            median = Estimate.of(taken).median
            if math.isfinite(median):
                found.append((median, system))
        return min(found)[1] if found else None


@dataclass
class Session:
    """One run of the script: its options, the machine's peak GEMM rates, every model."""

    command: str
    rounds: int
    runs: int
    warmup: int
    peak: dict[str, Any]
    models: list[ModelRun]
    total_s: float
    from_journal: int = 0
    """Measurements taken from the journal of a run stopped part-way (`--resume`)."""
    measured: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )


def write_report(session: Session, output: Path, method: str) -> None:
    """The Markdown at `output` (keeping its hand-written analysis) and the plot beside it."""
    plot = output.with_suffix(".png")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_plot(session, plot)
    text = render(session, method, plot.name)
    output.write_text(text + kept_analysis(output))


def render(session: Session, method: str, plot_name: str) -> str:
    versions = package_versions(("openvino", "onnxruntime"))
    lines = [
        "# Batch latency side by side: Packrat's plans against each backend in one process "
        "(issue 15)",
        "",
        f"Measured {session.measured} on {platform.node()}: {cpu_model()}, "
        f"{len(os.sched_getaffinity(0))} usable CPUs, Linux {platform.release()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        "",
        f"Command: `{session.command}` ({plural(session.rounds, 'round')}; per round, batch "
        f"size and system {session.warmup} untimed and {session.runs} timed batches; total "
        f"{session.total_s / 60:.1f} min"
        + (
            f", resumed: {session.from_journal} measurements taken from the journal of the "
            "run it finished"
            if session.from_journal
            else ""
        )
        + ").",
        "",
        "## How it was measured",
        "",
        method,
        "",
        f"![Batch latency of every system, and best / packrat]({plot_name})",
        "",
    ]
    for run in session.models:
        lines += model_section(run)
    lines += peak_section(session)
    return "\n".join(lines) + "\n"


# --- per model ----------------------------------------------------------------------------------


def model_section(run: ModelRun) -> list[str]:
    singles = [s for s in SINGLE if s in run.medians]
    lines = [
        f"## {run.model}",
        "",
        f"`packrat serve {run.model}` serves it on {run.served} ({run.reason}); plans from "
        f"`{run.profile}`.",
        "",
        *settings(run),
        "",
        "| batch | packrat plan (predicted ms) | packrat | "
        + " | ".join(singles)
        + " | best single-process | best / packrat | no worse? |",
        "| ---: | --- | ---: | " + "---: | " * len(singles) + "--- | ---: | --- |",
    ]
    verdicts = []
    for batch in run.batches:
        ratio = run.ratio(batch)
        verdicts.append(verdict(ratio))
        cells = [cell(run.estimate(s, batch)) for s in ("packrat", *singles)]
        lines.append(
            f"| {batch} | `{run.plans[batch]}` ({run.predicted_ms[batch]:.2f}) | "
            + " | ".join(cells)
            + f" | {run.fastest(batch, singles) or '-'} | {cell(ratio, 3)} | {verdicts[-1]} |"
        )
    worse = [str(b) for b, v in zip(run.batches, verdicts, strict=True) if v == "**no**"]
    lines += [
        "",
        f"Batch latency in ms: median over rounds [95% CI]. Packrat is no worse (median best "
        f"/ packrat >= 1) at {verdicts.count('yes')} of {len(run.batches)} batch sizes; worse "
        f"beyond its CI at: {', '.join(worse) or 'none'} "
        f"({by_chance_text(sum(v != '-' for v in verdicts))}). Over all {len(run.batches)} batch "
        f"sizes, best / packrat (per batch size the geometric mean of its rounds): "
        f"{overall_text(run.overall())}. Each system held fixed over them, its latency / "
        f"packrat's alike: "
        + "; ".join(f"{s} {overall_text(run.overall(s))}" for s in singles)
        + ".",
        "",
    ]
    return lines


def settings(run: ModelRun) -> list[str]:
    """What each system ran with, and what could not run."""
    lines = []
    for system in SYSTEMS:
        if system in run.properties:
            found = ", ".join(f"{k} {v}" for k, v in run.properties[system].items())
            lines.append(f"- {system}: {found}")
        if system in run.unavailable:
            lines.append(f"- {system}: **not measured**: {run.unavailable[system]}")
    if "ov-throughput" in run.notes:
        used = {b: notes[-1] for b, notes in run.notes["ov-throughput"].items() if notes}
        small = [f"{b}: {n}" for b, n in used.items() if n != used.get(max(run.batches))]
        if small:
            lines.append(f"- ov-throughput, smaller batches ran on fewer: {'; '.join(small)}")
    return lines


def verdict(ratio: Estimate) -> str:
    """yes: median best / packrat >= 1; "no, within CI": below 1 but its CI holds 1;
    **no**: the CI (or the one round) is below 1."""
    if not math.isfinite(ratio.median):
        return "-"
    if ratio.median >= 1.0:
        return "yes"
    if math.isfinite(ratio.high) and ratio.high >= 1.0:
        return "no, within CI"
    return "**no**"


MISS_AT_PARITY = 0.025
"""How often a 95% CI lies wholly below 1 when the two sides are equally fast."""


def by_chance(sizes: int, miss: float = MISS_AT_PARITY, level: float = 0.95) -> tuple[float, int]:
    """How many of `sizes` batch sizes chance alone puts "worse beyond its CI" when Packrat
    and the best single-process system are equally fast: a 95% CI lies wholly below 1 with
    probability `miss` (2.5%), independently per batch size. Returns the expected count and
    the largest count reached in a `level` share of runs (the binomial's quantile)."""
    total = 0.0
    for count in range(sizes + 1):
        total += math.comb(sizes, count) * miss**count * (1 - miss) ** (sizes - count)
        if total >= level:
            return sizes * miss, count
    return sizes * miss, sizes


def by_chance_text(sizes: int) -> str:
    expected, most = by_chance(sizes)
    return (
        f"at parity, each batch size's CI lies wholly below 1 with probability "
        f"{MISS_AT_PARITY:.1%}: over "
        f"{sizes} sizes, {expected:.1f} expected by chance alone, up to {most} in 95% of runs"
    )


def overall_text(estimate: Estimate) -> str:
    """The geometric mean, its 95% CI and the median: a CI is of the mean, and the median of
    a few misses among many hits can lie outside it."""
    if not math.isfinite(estimate.low):
        return f"median {estimate.median:.3f}"
    mean = math.sqrt(estimate.low * estimate.high)  # the CI is symmetric in logs
    return (
        f"geometric mean {mean:.3f} [{estimate.low:.3f}, {estimate.high:.3f}], "
        f"median {estimate.median:.3f}"
    )


def cell(estimate: Estimate, digits: int | None = None) -> str:
    """A median and its 95% CI: "12.3 [11.9, 12.8]" (no CI from one round)."""
    if not math.isfinite(estimate.median):
        return "-"
    if digits is None:
        digits = 2 if estimate.median < 100 else 1 if estimate.median < 1000 else 0
    text = f"{estimate.median:.{digits}f}"
    if math.isfinite(estimate.low):
        text += f" [{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"
    return text


# --- the peak -----------------------------------------------------------------------------------


def peak_section(session: Session) -> list[str]:
    peak = session.peak
    rates = ", ".join(
        f"{name} {peak[name]['gflops']:.0f} GFLOP/s (n = {peak[name]['size']})"
        for name in ("fp32", "bf16")
        if name in peak
    )
    if "bf16" not in peak:
        rates += " (bf16 not measured: this CPU does not compute it natively)"
    lines = [
        "## How far from the machine's peak",
        "",
        f"Peak GEMM rate, `torch.matmul` of two n x n matrices on {peak['threads']} threads, the "
        f"best over the sizes tried: {rates}. A model's rate: its FLOPs per request (matrix "
        "products and convolutions, `torch.utils.flop_counter` on the eager module at batch 1) "
        "x batch size / the fastest system's median latency; set against the peak in the "
        "precision that system computed in.",
        "",
    ]
    for run in session.models:
        lines += [
            f"### {run.model}: {run.flops_per_request / 1e9:.3g} GFLOP per request",
            "",
            "| batch | fastest system | precision | ms | GFLOP/s | of peak |",
            "| ---: | --- | --- | ---: | ---: | ---: |",
        ]
        for batch in run.batches:
            lines.append(peak_row(run, batch, peak))
        lines.append("")
    return lines


def peak_row(run: ModelRun, batch: int, peak: dict[str, Any]) -> str:
    fastest = run.fastest(batch, SYSTEMS)
    if fastest is None:
        return f"| {batch} | - | | | | |"
    ms = run.estimate(fastest, batch).median
    precision = run.properties[fastest].get("precision", "fp32")
    rate = run.flops_per_request * batch / (ms / 1000.0) / 1e9
    share = rate / peak[precision]["gflops"] if precision in peak else math.nan
    return f"| {batch} | {fastest} | {precision} | {ms:.2f} | {rate:.0f} | {share:.0%} |"


# --- the plot -----------------------------------------------------------------------------------


def write_plot(session: Session, path: Path) -> None:
    """Per model (columns): latency against batch size for every system (log-log) and best
    single-process / packrat with the line at 1; medians over rounds, 95% CI bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = len(session.models)
    fig = Figure(figsize=(5.2 * columns, 8.0), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle("Batch latency: median over rounds, bars: 95% CI (cut at the axes)", fontsize=10)
    for k, run in enumerate(session.models):
        top = fig.add_subplot(2, columns, k + 1)
        bottom = fig.add_subplot(2, columns, columns + k + 1, sharex=top)
        for j, system in enumerate(s for s in SYSTEMS if s in run.medians):
            values = [run.estimate(system, b) for b in run.batches]
            top.errorbar(run.batches, [e.median for e in values], yerr=errors(values), marker="o",
                         markersize=3, capsize=2, color=f"C{j}", label=system)  # fmt: skip
        ratios = [run.ratio(b) for b in run.batches]
        bottom.errorbar(run.batches, [e.median for e in ratios], yerr=errors(ratios),
                        marker="o", markersize=3, capsize=2, color="C0")  # fmt: skip
        bottom.axhline(1.0, color="black", linewidth=0.8)
        bottom.set_yscale("log")  # 0.5x and 2x alike, as the CIs are
        top.set_yscale("log")
        # With few rounds a CI spans decades; the medians set the scale, long bars are cut.
        top.set_ylim(*span([run.estimate(s, b) for s in run.medians for b in run.batches]))
        bottom.set_ylim(*span([*ratios, Estimate.of([1.0])]))
        top.set_ylabel("batch latency, ms")
        top.set_title(f"{run.model} (packrat on {run.served})")
        bottom.set_ylabel("best single-process / packrat")
        bottom.set_xlabel("batch size")
        ticks = [b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max(run.batches)]
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(b) for b in ticks])
            ax.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=8)
    fig.savefig(path, format="png", dpi=110)


def span(estimates: Sequence[Estimate], margin: float = 3.0) -> tuple[float, float]:
    """Log-axis limits: from the smallest median / `margin` to the largest x `margin`."""
    medians = [e.median for e in estimates if math.isfinite(e.median) and e.median > 0]
    if not medians:
        return 0.1, 10.0
    return min(medians) / margin, max(medians) * margin


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def errors(estimates: Sequence[Estimate]) -> list[list[float]]:
    """Matplotlib's asymmetric error bars: the 95% CI around each median (none without one)."""
    below, above = [], []
    for e in estimates:
        ok = math.isfinite(e.median) and math.isfinite(e.low)
        # The CI is the geometric mean's: a skewed round can leave the median outside it.
        below.append(max(0.0, e.median - e.low) if ok else 0.0)
        above.append(max(0.0, e.high - e.median) if ok else 0.0)
    return [below, above]
