"""What a change of plan costs: `Engine.reconfigure` between the fat instance and thin ones.

    python benchmarks/switch_cost.py [--model resnet50] [--batch 8] [--rounds 8]

(with the project's venv active; HF_HUB_OFFLINE=1 is set). On the first two usable cores, one
engine with a pool of two workers, started on the thin plan <2,1,B/2> (so the worker that
becomes fat booted on one core), alternates between the fat plan <1,2,B> and the thin plan.
Each round switches, runs the first batch on the new plan, then three more. It prints, per
direction, the switch time (from the call to every worker re-pinned and re-threaded: the next
batch can start), the first batch's latency after the switch and the median of the three
after it (the first one pays for threads that wake or start), as median and max over the
rounds. Takes about a minute for ResNet-50 at batch 8 on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from packrat.models.resolve import resolve_model  # noqa: E402
from packrat.pool import Engine, EngineConfig  # noqa: E402
from packrat.topology import read_topology  # noqa: E402
from packrat.types import InstanceSpec, Plan  # noqa: E402


def plan_of(*instances: InstanceSpec) -> Plan:
    return Plan(
        cores=sum(i.threads for i in instances),
        batch=sum(i.batch for i in instances),
        latency_ms=float("nan"),
        instances=instances,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    first, second = read_topology().cpu_ids()[:2]
    half = args.batch // 2
    plans = {
        "fat": plan_of(InstanceSpec(2, args.batch, (first, second))),
        "thin": plan_of(
            InstanceSpec(1, half, (first,)), InstanceSpec(1, args.batch - half, (second,))
        ),
    }
    with tempfile.TemporaryDirectory() as weights:
        config = EngineConfig(weights_dir=Path(weights), start_timeout_s=600, batch_timeout_s=120)
        with Engine(resolve_model(args.model), plans["thin"], config, pool_size=2) as engine:
            requests = engine.example_requests(args.batch)

            def batch_ms() -> float:
                started = time.perf_counter()
                engine.infer(requests)
                return 1000.0 * (time.perf_counter() - started)

            for plan in [*plans.values()] * 2:  # warm both layouts
                engine.reconfigure(plan)
                batch_ms()
            rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in plans}
            for _ in range(args.rounds):
                for name, plan in plans.items():
                    done = engine.reconfigure(plan)
                    after = batch_ms()
                    steady = statistics.median(batch_ms() for _ in range(3))
                    rows[name].append((1000.0 * done.took_s, after, steady))
    print(f"{args.model}, batch {args.batch}, cores {first},{second}, {args.rounds} rounds (ms)")
    print(f"{'to':>5} {'switch p50':>10} {'max':>7} {'1st batch p50':>13} {'steady p50':>10}")
    for name, values in rows.items():
        switch = [v[0] for v in values]
        print(
            f"{name:>5} {statistics.median(switch):10.2f} {max(switch):7.2f} "
            f"{statistics.median(v[1] for v in values):13.1f} "
            f"{statistics.median(v[2] for v in values):10.1f}"
        )


if __name__ == "__main__":
    main()
