"""The report of benchmarks/simulate_paper.py (Markdown and two plots): the summary, the fits
behind the synthetic profiles, and per case the servers at every batch size."""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.simulate_paper.cases import MIN_FAT_BATCHES, PAPER_MICRO, SYNTHETIC_FROM, Case, Point


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def mean(values: Sequence[float]) -> float:
    good = [v for v in values if math.isfinite(v)]
    return sum(good) / len(good) if good else math.nan


def speedups(points: dict[int, dict[str, Point]], other: str, stat: str) -> list[float]:
    """other's `stat` over auto's, per batch size."""
    return [ratio(getattr(p[other], stat), getattr(p["auto"], stat)) for p in points.values()]


def summary_table(results: list[tuple[Case, dict[int, dict[str, Point]]]]) -> list[str]:
    lines = [
        "| machine | model | bursts: auto vs fat, mean (best) | open loop: mean | open loop: p99 "
        "| bursts: auto vs single | paper, microbenchmark |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case, points in results:
        burst = speedups(points, "fat", "burst_ms")
        lines.append(
            f"| {case.label} | {case.model} | {mean(burst):.2f}x ({max(burst):.2f}x) "
            f"| {mean(speedups(points, 'fat', 'open_mean_ms')):.2f}x "
            f"| {mean(speedups(points, 'fat', 'open_p99_ms')):.2f}x "
            f"| {mean(speedups(points, 'single', 'burst_ms')):.2f}x "
            f"| {PAPER_MICRO[case.model] if case.machine == 'cloudlab-c6420' else '-'} |"
        )
    return lines


def case_table(case: Case, points: dict[int, dict[str, Point]]) -> list[str]:
    lines = [
        f"### {case.model}, {case.label}",
        "",
        "| B | auto's plan for B | bursts, ms: auto / fat / single | speedup over fat (single) "
        "| open loop: req/s | mean batch: auto / fat | mean, ms: auto / fat | p99, ms: auto / fat "
        "| speedup mean (p99) | switches (auto) | 503 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for batch, p in points.items():
        a, f, s = p["auto"], p["fat"], p["single"]
        refused = a.open_refused + f.open_refused
        lines.append(
            f"| {batch} | `{a.plan}` | {a.burst_ms:.1f} / {f.burst_ms:.1f} / {s.burst_ms:.1f} "
            f"| {ratio(f.burst_ms, a.burst_ms):.2f}x ({ratio(s.burst_ms, a.burst_ms):.2f}x) "
            f"| {a.rate_rps:.1f} | {a.open_batch:.1f} / {f.open_batch:.1f} "
            f"| {a.open_mean_ms:.1f} / {f.open_mean_ms:.1f} "
            f"| {a.open_p99_ms:.1f} / {f.open_p99_ms:.1f} "
            f"| {ratio(f.open_mean_ms, a.open_mean_ms):.2f}x "
            f"({ratio(f.open_p99_ms, a.open_p99_ms):.2f}x) | {a.open_switches} | {refused} |"
        )
    return lines


def fit_table(results: list[tuple[Case, dict[int, dict[str, Point]]]]) -> list[str]:
    lines = [
        "| model | fit | error on the c6420's cells (1 and even threads): RMS / max "
        "| serial share s(b), b = 1 ... 1024 | per-thread cost c, ms "
        "| L(T, 1) for T = 16 / 64 / 128, ms |",
        "| --- | --- | ---: | --- | --- | ---: |",
    ]
    seen = set()
    for case, _ in results:
        fit = case.fit
        if fit is None or (case.model, case.fit_kind) in seen:
            continue
        seen.add((case.model, case.fit_kind))
        shares = ", ".join(f"{fit.serial_share(b):.3f}" for b in fit.batches)
        costs = f"{fit.per_thread_ms[0]:.3f}"
        ones = " / ".join(f"{fit.latency_ms(t, fit.batches[0]):.1f}" for t in (16, 64, 128))
        lines.append(
            f"| {case.model} | {case.fit_kind} | {fit.rms_rel_error:.1%} / "
            f"{fit.max_rel_error:.1%} | {shares} | {costs} | {ones} |"
        )
    return lines


def plot(results: list[tuple[Case, dict[int, dict[str, Point]]]], path: Path, stat: str) -> None:
    """Speedup of auto over fat per batch size: one panel per machine, a line per model,
    bursts solid and open loop dashed (`stat` of the open loop: mean or p99)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(case.label for case, _ in results))
    columns = min(3, len(labels))
    rows = math.ceil(len(labels) / columns)
    fig = Figure(figsize=(5.2 * columns, 4.2 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, columns, k + 1) for k in range(len(labels))]
    what = "mean" if stat == "open_mean_ms" else "p99"
    fig.suptitle(
        f"Simulated speedup of Packrat (auto) over the fat instance: bursts of B (solid, mean) "
        f"and open loop at 0.7 of the fat's capacity (dashed, {what})"
    )
    for ax, label in zip(axes, labels, strict=True):
        for k, (case, points) in enumerate(r for r in results if r[0].label == label):
            batches = list(points)
            color = f"C{k}"
            ax.plot(batches, speedups(points, "fat", "burst_ms"), marker="o", color=color,
                    label=f"{case.model} bursts")  # fmt: skip
            ax.plot(batches, speedups(points, "fat", stat), marker="x", linestyle="--",
                    color=color, label=f"{case.model} open loop")  # fmt: skip
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B (--max-batch-size)")
        ax.set_ylabel("fat latency / auto latency")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.savefig(path, format="png", dpi=80)


def report(
    results: list[tuple[Case, dict[int, dict[str, Point]]]],
    args: argparse.Namespace,
    took_s: float,
) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/simulate_paper.py " + " ".join(sys.argv[1:])
    speed_png = args.output.with_name(f"{args.output.stem}-speedup.png")
    p99_png = args.output.with_name(f"{args.output.stem}-p99.png")
    lines = [
        "# Simulated Packrat on the paper's machines and larger ones (issue 7)",
        "",
        f"Command: `{command.strip()}` ({took_s:.0f} s, {stamp}). The figures are simulated from "
        "the authors' published single-instance profiles (`../shared/paper-profiles/`, "
        "TorchScript rows; their figures, their attribution), not measured here.",
        "",
        "`packrat simulate` runs the server's own pure code over simulated time: the batcher's "
        "rules (FIFO, dispatch at --max-batch-size or --max-batch-delay after the first request, "
        "one batch at a time, admission by `max_queue` and expected wait), the optimizer and "
        "`Planning` (placement on T cores), the batch split (`best_split`), and the plan policy "
        "(`PerBatch` for auto, told of every switch). A batch takes the slowest busy instance's "
        "profiled L(t_j, b_j), plus a fixed overhead and, if its plan changes, a switch. How "
        "close that is to the real server on this machine: `docs/simulate-validate.md`.",
        "",
        "## How it was run",
        "",
        f"- Servers: `auto` (each batch on the optimizer's plan for its size), `fat` (one "
        f"instance, all T cores) and `single` (T one-thread instances), each with "
        f"`--max-batch-size B`, `--max-batch-delay {args.max_batch_delay:g}`, a queue of 4B "
        "requests (at least 100) and no expected-wait limit (TorchServe refuses only on a full "
        f"queue); overhead {args.overhead_ms:g} ms per batch, a switch {args.switch_ms:g} ms, "
        f"noise CV {args.noise:g}, seed {args.seed}. Plans from the profiled batch sizes only "
        "(`--no-interpolate`, as the paper's optimizer).",
        f"- **Bursts** (the paper's latency per batch size): B requests at once, {args.bursts} "
        "times, each once the server is idle again; every burst is one batch of B. Speedup = "
        "fat's mean latency / auto's. With no noise this is the profile's predicted speedup "
        "plus the overhead and, for auto's first burst, one switch.",
        f"- **Open loop**: Poisson arrivals at {args.load:g} of the fat instance's capacity "
        f"at full batches, {args.load:g} x B / (L(T, B) + overhead), for about "
        f"{args.open_requests} requests (at least {MIN_FAT_BATCHES} fat batches). Batches then "
        "come in every size up to B (mean batch sizes in the tables): the per-batch policy and "
        "the queueing both count. Speedup = fat's mean (p99) latency / auto's.",
        f"- Synthetic machines: profiles of {', '.join(map(str, args.synthetic))} cores "
        f"extrapolated from the {SYNTHETIC_FROM}'s with two fits (below): `amdahl+threads` "
        "(Amdahl's law plus a cost per thread, the best fit) and `amdahl` (no per-thread "
        "cost: a fat instance never gets slower with more threads, its best case). Where the "
        "truth lies between them is what a measurement on such a machine would tell.",
        "",
        "## Headline: speedup of auto over fat, mean over batch sizes",
        "",
        "The paper (c6420, 16 cores): microbenchmark 1.13x-1.53x (per model in the last column), "
        "end to end in TorchServe 1.43x-1.83x on average, 1.72x-2.09x at best.",
        "",
        *summary_table(results),
        "",
        f"![speedup per batch size]({speed_png.name})",
        "",
        f"![p99 speedup per batch size]({p99_png.name})",
        "",
        "## Synthetic profiles",
        "",
        "Per batch size b, L(t, b) = L1(b) (s(b) + (1 - s(b)) / t) + c t (Amdahl's law plus "
        "a cost per thread, one c for all batch sizes; c = 0 for `amdahl`), fitted by "
        "non-negative least squares on the relative error over "
        f"the {SYNTHETIC_FROM}'s thread counts 1 and 2, 4, ... 16, then evaluated for t = 1 "
        "and every even t up to the machine's cores (odd thread counts run far slower than "
        "their even neighbours in the published data, e.g. BERT at b = 8: 141 ms on 3 "
        "threads, 77 on 4; no smooth model fits them and no optimal plan uses them). The model "
        "knows nothing of a larger machine's sockets, memory bandwidth or clocks.",
        "",
        *fit_table(results),
        "",
        "## Per model and machine",
        "",
    ]
    for case, points in results:
        lines += [*case_table(case, points), ""]
    return "\n".join(lines) + "\n"
