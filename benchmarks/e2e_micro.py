"""The microbenchmark of the end-to-end suite (benchmarks/e2e.py), one model per process:

    python benchmarks/e2e_micro.py MODEL --out FILE [--batches 1,2,4,...,64] [--profile-batch 64]
        [--no-bench]

(PACKRAT_CACHE_DIR set by the caller: the servers started later plan with the same profile).

1. The model's profile, as `packrat serve` makes it on first start (the server's quick sampling
   policy, thread counts 1..T, batches 1, 2, 4, ... --profile-batch), in the cache where the
   server looks for it; cells already cached are not measured again.
2. Unless --no-bench, what `packrat bench MODEL --batches ...` measures (the same `run_bench`:
   Packrat's plan, the fat instance, T single-thread instances and every other homogeneous
   plan, each with its instances running concurrently, end to end through `Engine.infer`),
   with a shorter sampling policy (BENCH_POLICY) than the command's, to fit the suite's budget.

Writes FILE (JSON): the profile's path, the seconds each step took, every measurement and the
workers' memory; progress goes to stderr. Imports torch (through the pool's workers).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from packrat.bench.offline import BenchConfig, LayoutMemory, Measurement, run_bench
from packrat.models.resolve import resolve_model
from packrat.profiler.cache import cached_profile, default_profile_path
from packrat.profiler.sweep import SweepConfig, powers_of_two, profile_model
from packrat.progress import progress_bar
from packrat.server.repository import QUICK_POLICY
from packrat.stats import SamplingPolicy
from packrat.topology import read_topology

BENCH_POLICY = SamplingPolicy(warmup_runs=1, min_runs=2, max_runs=10, rel_ci=0.05, max_time_s=2.0)
"""One warm-up run per configuration and batch size (each new batch shape is slow in graph
mode the first time), then at least 2 timed runs, more while they take under 2 s in all (up to
10, or until the 95% CI is within +-5%). `packrat bench` itself samples at least 5 runs."""


def micro(model: str, batches: tuple[int, ...], profile_batch: int, bench: bool) -> dict[str, Any]:
    source = resolve_model(model)
    topology = read_topology()
    cores = topology.num_cores
    path = default_profile_path(source.identity(), topology)
    cached = cached_profile(path)
    sweep = SweepConfig(cores, powers_of_two(profile_batch), QUICK_POLICY)
    started = time.monotonic()
    with progress_bar(Console(stderr=True)) as bar:
        if cached is not None and all(cell in cached.cells for cell in sweep.cells):
            profile = cached
        else:
            profile = profile_model(
                source, sweep, out=path, existing=cached, topology=topology, progress=bar
            )
        profiled = time.monotonic()
        measurements: list[Measurement] = []
        memory: list[LayoutMemory] = []
        if bench:
            config = BenchConfig(cores=cores, batches=batches, policy=BENCH_POLICY)
            result = run_bench(source, profile, config, topology, progress=bar)
            measurements, memory = result.measurements, result.memory
    return {
        "model": model,
        "cores": cores,
        "profile_path": str(path),
        "profile_s": profiled - started,
        "bench_s": time.monotonic() - profiled,
        "bench_policy": asdict(BENCH_POLICY),
        "profile_policy": asdict(QUICK_POLICY),
        "measurements": [asdict(m) for m in measurements],
        "memory": [asdict(m) for m in memory],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--profile-batch", type=int, default=64)
    parser.add_argument("--no-bench", action="store_true")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))
    saved = micro(args.model, batches, args.profile_batch, not args.no_bench)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(saved, indent=1))


if __name__ == "__main__":
    main()
