"""A run's results as files and pictures: JSON (every request and the summary), CSV (one row
per request), a rich table, and a latency timeline PNG."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from rich.table import Table

from packrat.bench.loadgen.client import Protocol, Target
from packrat.bench.loadgen.result import LoadResult, LoadSummary, PhaseSummary, RequestRecord
from packrat.errors import PackratError
from packrat.workload.schedule import Phase

FORMAT = "packrat-loadgen/1"
CSV_COLUMNS = (
    "phase",
    "scheduled_s",
    "sent_s",
    "done_s",
    "latency_ms",
    "status",
    "compute_ms",
    "error",
    "detail",
)


def write_json(result: LoadResult, path: Path) -> None:
    """The target, phases, summary and every request; `read_json` reads it back."""
    document = {
        "format": FORMAT,
        "target": {
            "url": result.target.url,
            "model": result.target.model,
            "protocol": result.target.protocol.value,
        },
        "start_unix_s": result.start_unix_s,
        "phases": [asdict(p) for p in result.phases],
        "summary": _finite(asdict(result.summary())),
        "requests": [_row(r) for r in result.records],
    }
    with _writing(path) as f:
        json.dump(document, f, indent=1, allow_nan=False)


def read_json(path: Path) -> LoadResult:
    """A result written by `write_json`."""
    try:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            raise PackratError(f"{path} is not a {FORMAT} file")
        target = document["target"]
        return LoadResult(
            target=Target(target["url"], target["model"], Protocol(target["protocol"])),
            phases=tuple(Phase(p["name"], p["start_s"], p["end_s"]) for p in document["phases"]),
            records=tuple(_record(row) for row in document["requests"]),
            start_unix_s=float(document["start_unix_s"]),
        )
    except OSError as exc:
        raise PackratError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PackratError(f"{path} is not a valid load generator result: {exc!r}") from None


def write_csv(records: Sequence[RequestRecord], path: Path) -> None:
    """One row per request, columns `CSV_COLUMNS`; empty cells for missing values."""
    with _writing(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in records:
            writer.writerow({k: "" if v is None else v for k, v in _row(r).items()})


def read_csv(path: Path) -> list[RequestRecord]:
    """The records of a file written by `write_csv`."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [_record({k: (None if v == "" else v) for k, v in row.items()}) for row in rows]
    except OSError as exc:
        raise PackratError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise PackratError(f"{path} is not a load generator CSV: {exc!r}") from None


def summary_table(summary: LoadSummary, title: str = "load generator") -> Table:
    """Per phase and overall: counts, failures by kind, throughput and latency in ms."""
    table = Table(title=f"{title}: latency from the scheduled send time, ms")
    for column in ("phase", "sent", "ok", "failed", "req/s ok", "mean", "p50", "p90", "p99", "max"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    table.add_column("failures")
    if len(summary.phases) > 1:
        for i, phase in enumerate(summary.phases):
            table.add_row(*_cells(phase), end_section=i == len(summary.phases) - 1)
    table.add_row(*_cells(summary.overall))
    return table


def _cells(s: PhaseSummary) -> list[str]:
    lat = s.latency
    values = () if lat is None else (lat.mean_ms, lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms)
    stats = [f"{v:.1f}" for v in values] or ["-"] * 5
    rate = "-" if math.isnan(s.throughput_rps) else f"{s.throughput_rps:.1f}"
    failures = ", ".join(f"{kind}: {n}" for kind, n in s.failures.items())
    return [s.name, str(s.sent), str(s.succeeded), str(s.failed), rate, *stats, failures]


def plot_timeline(
    result: LoadResult,
    path: Path,
    markers: Sequence[tuple[float, str]] = (),
    title: str | None = None,
    rug: Sequence[float] = (),
    rug_label: str = "events",
) -> None:
    """Each request's latency against its scheduled time (log scale), failures in red (at
    the top when they have no latency), phase boundaries dotted, a labelled vertical line
    at each `(seconds from the start, label)` marker, and a short tick along the bottom at
    each time of `rug` (for events too many to label, such as switches at every batch),
    counted in the legend as `rug_label`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter

    ok = [r for r in result.records if r.ok and r.latency_ms is not None]
    bad = [r for r in result.records if not r.ok]
    latencies = [r.latency_ms for r in result.records if r.latency_ms is not None]
    top_ms = max(latencies, default=1.0) * 1.5
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no pyplot state
    ax = fig.add_subplot()
    ax.scatter(
        [r.scheduled_s for r in ok],
        [_positive(r.latency_ms) for r in ok],
        s=6,
        alpha=0.6,
        label=f"ok ({len(ok)})",
    )
    if bad:
        ax.scatter(
            [r.scheduled_s for r in bad],
            [top_ms if r.latency_ms is None else _positive(r.latency_ms) for r in bad],
            s=14,
            marker="x",
            color="red",
            label=f"failed ({len(bad)})",
        )
    for phase in result.phases[1:]:
        ax.axvline(phase.start_s, color="grey", linestyle=":", linewidth=1)
    for at_s, label in markers:
        ax.axvline(at_s, color="black", linestyle="--", linewidth=1)
        ax.text(at_s, 1.0, f" {label}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    if rug:
        ax.vlines(
            list(rug),
            0.0,
            0.05,
            transform=ax.get_xaxis_transform(),  # y in axes fractions: the bottom 5%
            colors="tab:orange",
            linewidth=0.5,
            label=f"{rug_label} ({len(rug)})",
        )
    ax.set_yscale("log")
    # Plain numbers (20, 50, 100), not 2x10^1, on major and minor ticks alike.
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    end_s = max([p.end_s for p in result.phases] + [r.scheduled_s for r in result.records])
    ax.set_xlim(0.0, max(end_s, 1e-3) * 1.01)
    ax.set_xlabel("scheduled send time, s")
    ax.set_ylabel("latency, ms")
    target = result.target
    ax.set_title(title or f"{target.model} ({target.protocol.value}): latency per request")
    ax.legend(loc="best", markerscale=2)
    ax.grid(True, which="both", alpha=0.3)
    with _writing(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def _positive(latency_ms: float | None) -> float:
    return max(latency_ms or 0.0, 1e-3)  # a log axis cannot show 0


def _row(r: RequestRecord) -> dict[str, Any]:
    return {
        "phase": r.phase,
        "scheduled_s": r.scheduled_s,
        "sent_s": r.sent_s,
        "done_s": r.done_s,
        "latency_ms": r.latency_ms,
        "status": r.status,
        "compute_ms": r.compute_ms,
        "error": r.error,
        "detail": r.detail,
    }


def _record(row: dict[str, Any]) -> RequestRecord:
    def number(key: str) -> float | None:
        value = row.get(key)
        return None if value is None else float(value)

    status = row.get("status")
    return RequestRecord(
        phase=str(row["phase"]),
        scheduled_s=float(row["scheduled_s"]),
        sent_s=number("sent_s"),
        done_s=float(row["done_s"]),
        status=None if status is None else int(status),
        compute_ms=number("compute_ms"),
        error=str(row.get("error") or ""),
        detail=str(row.get("detail") or ""),
    )


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@contextmanager
def _writing(path: Path, mode: str = "w", newline: str | None = None) -> Iterator[IO[Any]]:
    """`path` open for writing (its folder made); OSError as a PackratError naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open(mode, newline=newline) as f:
            yield f
    except OSError as exc:
        raise PackratError(f"cannot write {path}: {exc.strerror or exc}") from None
