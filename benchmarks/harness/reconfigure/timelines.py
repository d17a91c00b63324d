"""The latency timelines of benchmarks/reconfigure.py, each round's with its switches marked
(labelled when few and far apart, else a rug)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from packrat.bench.loadgen import plot_timeline

from harness.reconfigure.runs import Round, ServerRun, round_stem

LABELLED_SWITCHES = 12  # more switches than this (or closer than LABEL_GAP) are drawn as a rug
LABEL_GAP = 0.04  # of the run's duration


def draw_timelines(run: ServerRun, args: argparse.Namespace) -> None:
    """Each round's latency timeline with its switches marked, in the work directory; for the
    servers that switch, round 1's also next to the report."""
    for rnd in run.rounds:
        draw_timeline(run, rnd, round_stem(args.workdir, run.server, rnd.number), args)
    if run.server.follows_load and run.rounds:
        draw_timeline(run, run.rounds[0], timeline_path(args.output, run), args)


def draw_timeline(run: ServerRun, rnd: Round, png: Path, args: argparse.Namespace) -> None:
    """Round `rnd`'s latency timeline with its switches marked, as `png` (suffix added)."""
    spans = rnd.spans
    title = (
        f"{args.model}, {run.server.name}, round {rnd.number} of {len(run.rounds)}: latency per "
        f"request, {len(spans)} switches (phases dotted)"
    )
    png = png.with_suffix(".png")
    starts = sorted(span.start_s for span in spans)
    gaps = np.diff(starts) if len(starts) > 1 else np.array([math.inf])
    # Labels need room: a few switches, far enough apart that their labels do not overlap.
    if len(spans) <= LABELLED_SWITCHES and gaps.min() >= LABEL_GAP * rnd.result.phases[-1].end_s:
        markers = [(span.start_s, s["to"]) for span, s in zip(spans, rnd.switches, strict=True)]
        plot_timeline(rnd.result, png, markers=markers, title=title)
    else:
        rug = [span.start_s for span in spans]
        plot_timeline(rnd.result, png, title=title, rug=rug, rug_label="switches")


def timeline_path(output: Path, run: ServerRun) -> Path:
    return output.with_name(f"{output.stem}-{run.server.slug}.png")
