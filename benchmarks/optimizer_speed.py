"""How fast the optimizer fills its table and rebuilds plans, for T in {16, 64, 128}, B = 1024.

    python benchmarks/optimizer_speed.py [--repeats 7] [--batch 1024]

Profiles are synthetic (Amdahl-style with a per-thread overhead and +-3% noise) over every
t = 1..T and powers-of-two batches up to B, the paper's grid; the 16-core row is also run on
the published BERT profile when ../shared is present. Each is planned twice: on the grid as
it is (`packrat plan`; the level solver) and interpolated to every batch size 1..B (what
`packrat serve` and `packrat simulate` plan on; the merge solver). Columns: filling the whole
latency table for every c <= T and b <= B; rebuilding the plan for (T, B) and (T, B - 1) with
the memo cleared; and the plans for every b <= B on T cores, as a server asks for them when it
sizes its pool. Prints medians over the repeats.

Then, for each published single-instance profile under ../shared, what planning on the profile
made non-decreasing in the batch (`LatencyTable.monotone_in_batch`, what `PlanTable` does)
changes against planning on the cells as measured (the level solver on the raw grid): how many
of the optimal latencies for B = 1..1024 on all cores differ, and by how much. No torch is
imported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from packrat.optimizer import LatencyTable, PlanTable
from packrat.optimizer.levels import LevelSolver

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper-profiles"


def synthetic(cores: int, max_batch: int, seed: int = 0) -> LatencyTable:
    threads = np.arange(1, cores + 1)
    batches = 2 ** np.arange(0, int(np.log2(max_batch)) + 1)
    rng = np.random.default_rng(seed)
    # Per sample: 3 ms serial + 60 ms parallel work; every thread adds 0.2 ms of coordination.
    lat = batches[None, :] * (3.0 + 60.0 / threads[:, None]) + 0.2 * threads[:, None]
    lat *= rng.uniform(0.97, 1.03, lat.shape)
    return LatencyTable(tuple(map(int, threads)), tuple(map(int, batches)), lat)


def timed(fn: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(table: LatencyTable, cores: int, batch: int, repeats: int) -> tuple[float, ...]:
    """Median seconds to fill the table, to rebuild the plans for B and B - 1, and to build
    every plan for b <= B."""
    build = timed(lambda: PlanTable(table, cores, batch), repeats)
    pt = PlanTable(table, cores, batch)

    def rebuild(b: int) -> None:
        pt.plan.cache_clear()  # type: ignore[attr-defined]  # time the rebuild, not the memo
        pt.plan(cores, b)

    def every_plan() -> None:
        pt.plan.cache_clear()  # type: ignore[attr-defined]
        for b in range(1, batch + 1):
            if np.isfinite(pt.latency_ms(cores, b)):
                pt.plan(cores, b)

    return (
        build,
        timed(lambda: rebuild(batch), repeats),
        timed(lambda: rebuild(batch - 1), repeats),
        timed(every_plan, max(1, repeats // 3)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    grids = [(f"synthetic T={t}", synthetic(t, args.batch), t) for t in (16, 64, 128)]
    if PAPER.is_dir():
        from packrat.profiler.profile_file import load_profile

        bert = load_profile(PAPER / "cloudlab-c6420" / "bert_latency.csv").latency_table()
        grids.insert(0, ("published BERT T=16", bert, 16))
    rows = [(label, "grid", table, t) for label, table, t in grids]
    rows += [(label, "every b", table.interpolated(), t) for label, table, t in grids]
    print(
        f"{'profile':22s} {'batches':>8s} {'cells':>7s} {'table (c<=T, b<=B)':>19s} "
        f"{'plan(T,B)':>10s} {'plan(T,B-1)':>12s} {'plans b<=B':>11s}"
    )
    for label, kind, table, cores in rows:
        build, first, other, every = measure(table, cores, args.batch, args.repeats)
        cells = int(np.isfinite(table.latency_ms).sum())
        print(
            f"{label:22s} {kind:>8s} {cells:7d} {build * 1e3:16.1f} ms {first * 1e3:7.1f} ms "
            f"{other * 1e3:9.1f} ms {every:9.2f} s"
        )
    print(f"(median of {args.repeats}; B = {args.batch}; python {sys.version.split()[0]})")
    if PAPER.is_dir():
        print()
        dips(args.batch)


def dips(max_batch: int) -> None:
    """Optimal latencies on the monotone table against those on the raw cells."""
    from packrat.profiler.profile_file import load_profile

    print(f"{'published profile':48s} {'B changed':>10s} {'largest change':>15s}")
    changed_total = asked_total = 0
    for path in sorted(PAPER.glob("*/*.csv")):
        if path.parent.name == "multiinstance":  # several instances per row: not a profile
            continue
        table = load_profile(path).latency_table()
        cores = table.max_threads
        t_ok = np.array(table.threads) <= cores
        b_ok = np.array(table.batches) <= max_batch
        raw = LevelSolver(
            table.latency_ms[np.ix_(t_ok, b_ok)],
            np.array(table.threads, dtype=np.int64)[t_ok],
            np.array(table.batches, dtype=np.int64)[b_ok],
            cores,
            max_batch,
        ).latency_table_ms[cores, 1:]
        planned = PlanTable(table, cores, max_batch).latency_table_ms[cores, 1:]
        both = np.isfinite(raw) & np.isfinite(planned)
        ratio = planned[both] / raw[both]
        changed = int((ratio != 1.0).sum())
        changed_total += changed
        asked_total += max_batch
        label = f"{path.parent.name}/{path.name}"
        print(f"{label:48s} {changed:10d} {100 * (ratio.max() - 1):+14.1f}%")
    print(f"{'all':48s} {changed_total:>4d} of {asked_total}")


if __name__ == "__main__":
    main()
