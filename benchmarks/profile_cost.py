"""What profiling costs with pruning, adaptive sampling and interpolation: a replay, no model runs.

    python benchmarks/profile_cost.py [--measured GLOB ...] [--output docs/profile-cost.md]

(a) T = 16, B up to 1024 (powers of two), on the paper's published CloudLab c6420 profiles:
replays a pruned sweep (`packrat.profiler.prune`) against each published table and counts the
cells it measures against the paper's 176; checks that the optimal plans from the pruned
profile equal those from the full one; simulates adaptive sampling
(`packrat.stats.should_stop`, default SamplingPolicy) on each measured cell to count
timed runs; estimates profiling time as the sum of simulated run latencies plus warm-up runs,
against the paper's way (10 warm-up and 100 timed runs per cell: the defaults of the authors'
harness, msr-fiddle/packrat run.py and benchmarks/*.py; the published CSVs do not record it).
Also: how often the profiles break the pruning's assumption, what that can cost (the
`Violations.loss_bound`) against what it did cost, and what interpolating between
powers of two costs in plan quality against the granular profiles (every b in 1..32).

(b) T = 2, B up to 64, the same replay on our own measured profiles of this machine (JSON
profiles found by --measured; by default the e2e suite's cache and ~/.cache/packrat).

Published profiles carry min/avg/max but no spread, so each cell's coefficient of variation
(CV) is estimated two ways: from the cell's range, (max - min) / avg / 5.0 (the expected
range of 100 normal samples is 5.0 sigma; outliers make this an overestimate), and from our
own measured profiles of the same model (median stdev/mean over their cells). Samples are
drawn log-normal with the cell's mean and CV, seeded, averaged over several draws.

Writes Markdown (the hand-written analysis after the marker line of an existing file is kept).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from packrat.stats import SamplingPolicy

from harness.profile_cost.replay import measured_profiles, powers_of_two, read_published
from harness.profile_cost.sections import (
    section_big,
    section_interpolation,
    section_orders,
    section_serve,
    section_small,
    section_violations,
)
from harness.report import ANALYSIS_MARKER, kept_analysis

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT.parent / "shared" / "paper-profiles"
MODELS = ("resnet50", "inception_v3", "gpt2", "bert")
MEASURED_DEFAULT = (
    "/tmp/e2e-clean/cache/profiles/*.json",
    str(Path.home() / ".cache" / "packrat" / "profiles" / "*.json"),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", nargs="*", default=list(MEASURED_DEFAULT))
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "profile-cost.md")
    args = parser.parse_args(argv)
    if not PAPER.is_dir():
        print(f"needs the published profiles in {PAPER}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    policy = SamplingPolicy()
    published = [
        read_published(PAPER / "cloudlab-c6420" / f"{m}_latency.csv", powers_of_two(1024))
        for m in MODELS
    ]
    measured = measured_profiles(args.measured)
    violation_paths = sorted(
        p for p in PAPER.glob("*/*_latency.csv") if p.parent.name != "multiinstance"
    )
    lines = [
        "# Profiling cost: pruning, adaptive sampling, interpolation",
        "",
        "Produced by `python benchmarks/profile_cost.py` (a replay against stored profiles: "
        "no model runs). Published profiles: Bhardwaj et al., ICML 2025 "
        "(`../shared/paper-profiles/`). Our profiles: "
        + (", ".join(f"`{p.model_name}`" for p in measured.values()) or "none found")
        + ".",
        "",
        *section_big(published, measured, policy),
        *section_serve(published, policy),
        *section_orders(published),
        *section_violations(violation_paths),
        *section_interpolation(PAPER),
        *section_small(measured, policy),
        f"_Replay took {time.perf_counter() - started:.0f} s._",
        "",
    ]
    report = "\n".join(lines)
    args.output.write_text(report + (kept_analysis(args.output) or f"\n{ANALYSIS_MARKER}\n"))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
