"""Summaries of `packrat bench` results: a table, a CSV and a PNG plot."""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from packrat.bench.offline import Measurement
from packrat.stats import CellStats


@dataclass(frozen=True)
class BatchSummary:
    """Packrat against the fat instance and the best measured configuration at one B."""

    batch: int
    packrat: Measurement
    fat: Measurement
    single: Measurement
    best: Measurement

    @property
    def speedup_over_fat(self) -> float:
        return self.fat.stats.mean_ms / self.packrat.stats.mean_ms

    @property
    def predicted_speedup(self) -> float | None:
        if self.fat.predicted_ms is None or self.packrat.predicted_ms is None:
            return None
        return self.fat.predicted_ms / self.packrat.predicted_ms

    @property
    def gap_to_best(self) -> float:
        """Packrat's latency over the best configuration's, minus 1 (0.03 = 3% slower)."""
        return self.packrat.stats.mean_ms / self.best.stats.mean_ms - 1.0

    @property
    def within_noise_of_best(self) -> bool:
        """The 95% confidence intervals of Packrat and the best configuration overlap."""
        p, b = self.packrat.stats, self.best.stats
        return p.mean_ms - p.ci95_ms <= b.mean_ms + b.ci95_ms


def summarize_batches(results: list[Measurement]) -> list[BatchSummary]:
    out = []
    for batch in sorted({m.batch for m in results}):
        rows = [m for m in results if m.batch == batch]
        out.append(
            BatchSummary(
                batch=batch,
                packrat=next(m for m in rows if m.label == "packrat"),
                fat=next(m for m in rows if "fat" in m.roles),
                single=next(m for m in rows if "single" in m.roles),
                best=min(rows, key=lambda m: m.stats.mean_ms),
            )
        )
    return out


def mean_speedup(summaries: list[BatchSummary]) -> float:
    """Arithmetic mean over batch sizes of the speedup over the fat instance (as the paper)."""
    return statistics.fmean(s.speedup_over_fat for s in summaries)


CSV_FIELDS = (
    "model",
    "cores",
    "batch",
    "label",
    "roles",
    "plan",
    "mean_ms",
    "ci95_ms",
    "p50_ms",
    "p95_ms",
    "stdev_ms",
    "n",
    "predicted_ms",
)


def write_csv(results: list[Measurement], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for m in results:
            s = m.stats
            w.writerow(
                [
                    m.model,
                    m.cores,
                    m.batch,
                    m.label,
                    "+".join(m.roles),
                    m.plan,
                    f"{s.mean_ms:.3f}",
                    f"{s.ci95_ms:.3f}",
                    f"{s.p50_ms:.3f}",
                    f"{s.p95_ms:.3f}",
                    f"{s.stdev_ms:.3f}",
                    s.n,
                    "" if m.predicted_ms is None else f"{m.predicted_ms:.3f}",
                ]
            )


def write_plot(results: list[Measurement], path: Path, title: str) -> None:
    """Left: latency per batch size (fat, single, Packrat, with 95% CIs). Right: Packrat's
    speedup over the fat instance, measured beside predicted (like the paper's Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sums = summarize_batches(results)
    xs = [s.batch for s in sums]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[CellStats]] = {
        "fat": [s.fat.stats for s in sums],
        "single-thread": [s.single.stats for s in sums],
        "Packrat": [s.packrat.stats for s in sums],
    }
    for name, ms in series.items():
        ax1.errorbar(
            xs,
            [m.mean_ms for m in ms],
            yerr=[m.ci95_ms for m in ms],
            marker="o",
            capsize=3,
            label=name,
        )
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("batch size B")
    ax1.set_ylabel("batch latency (ms)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    width = 0.38
    pos = range(len(sums))
    ax2.bar(
        [p - width / 2 for p in pos], [s.speedup_over_fat for s in sums], width, label="measured"
    )
    ax2.bar(
        [p + width / 2 for p in pos],
        [s.predicted_speedup or 0.0 for s in sums],
        width,
        label="predicted by profile",
    )
    ax2.axhline(1.0, color="black", linewidth=0.8)
    ax2.set_xticks(list(pos), [str(x) for x in xs])
    ax2.set_xlabel("batch size B")
    ax2.set_ylabel("speedup over fat instance")
    ax2.legend()
    ax2.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
