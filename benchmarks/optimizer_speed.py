"""How fast the optimizer fills its table and rebuilds plans, for T in {16, 64, 128}, B = 1024.

    python benchmarks/optimizer_speed.py [--repeats 7]

Profiles are synthetic (Amdahl-style with a per-thread overhead and +-3% noise) over every
t = 1..T and powers-of-two batches up to B, the paper's grid; the 16-core row is also run on
the published BERT profile when ../shared is present. Prints medians over the repeats.
No torch is imported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from packrat.optimizer import LatencyTable, PlanTable

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper-profiles"


def synthetic(cores: int, max_batch: int, seed: int = 0) -> LatencyTable:
    threads = np.arange(1, cores + 1)
    batches = 2 ** np.arange(0, int(np.log2(max_batch)) + 1)
    rng = np.random.default_rng(seed)
    # Per sample: 3 ms serial + 60 ms parallel work; every thread adds 0.2 ms of coordination.
    lat = batches[None, :] * (3.0 + 60.0 / threads[:, None]) + 0.2 * threads[:, None]
    lat *= rng.uniform(0.97, 1.03, lat.shape)
    return LatencyTable(tuple(map(int, threads)), tuple(map(int, batches)), lat)


def timed(fn: object, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(table: LatencyTable, cores: int, batch: int, repeats: int) -> tuple[float, ...]:
    """Median seconds to fill the table, and to rebuild the plans for B and B - 1."""
    build = timed(lambda: PlanTable(table, cores, batch), repeats)
    pt = PlanTable(table, cores, batch)

    def rebuild(b: int) -> None:
        pt.plan.cache_clear()  # type: ignore[attr-defined]  # time the rebuild, not the memo
        pt.plan(cores, b)

    return build, timed(lambda: rebuild(batch), repeats), timed(lambda: rebuild(batch - 1), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    rows = [(f"synthetic T={t}", synthetic(t, args.batch), t) for t in (16, 64, 128)]
    if PAPER.is_dir():
        from packrat.profiler.profile_file import load_profile

        bert = load_profile(PAPER / "cloudlab-c6420" / "bert_latency.csv").latency_table()
        rows.insert(0, ("published BERT T=16", bert, 16))
    print(
        f"{'profile':22s} {'cells':>6s} {'table (c<=T, b<=B)':>20s} {'plan(T,B)':>10s} "
        f"{'plan(T,B-1)':>12s}"
    )
    for label, table, cores in rows:
        build, first, other = measure(table, cores, args.batch, args.repeats)
        cells = int(np.isfinite(table.latency_ms).sum())
        print(
            f"{label:22s} {cells:6d} {build * 1e3:17.1f} ms {first * 1e3:7.1f} ms "
            f"{other * 1e3:9.1f} ms"
        )
    print(f"(median of {args.repeats}; B = {args.batch}; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
