"""How many 16-core nodes serve 1,000 and 10,000 req/s: Packrat's plans against the fat
instance, simulated on the paper's published profiles (issue 18).

    python benchmarks/capacity.py [--profiles ../shared/paper-profiles/cloudlab-c6420]
        [--models resnet50,inception_v3,gpt2,bert] [--rates 1000,10000]
        [--targets-ms 100,500] [--max-batch-size 32] [--plot docs/scale-out-capacity.png]

For each model, rate and p99 target, `packrat.sim.capacity.nodes_for` finds the fewest
nodes (16 cores each, one Packrat server per node, requests spread at random) whose share is
served with no 503 and p99 under the target, for `--policy auto` and for the fat instance.
Prints a Markdown table (paste it into docs/scale-out.md) and writes a plot of nodes per
model. Simulated from the authors' profiles, not measured here. About a minute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from packrat.controller.batching import BatchingConfig
from packrat.profiler.profile_file import load_profile
from packrat.sim import SimConfig, make_planning
from packrat.sim.capacity import CapacityPlan, nodes_for

POLICIES = ("auto", "fat")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profiles", type=Path, default=Path("../shared/paper-profiles/cloudlab-c6420")
    )
    parser.add_argument("--models", default="resnet50,inception_v3,gpt2,bert")
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--targets-ms", default="100,500")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--plot", type=Path, default=Path("docs/scale-out-capacity.png"))
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    targets = [float(t) for t in args.targets_ms.split(",")]
    batching = BatchingConfig(max_batch_size=args.max_batch_size, max_queue=4 * args.max_batch_size)
    started = time.monotonic()
    rows: list[tuple[str, float, float, dict[str, CapacityPlan]]] = []
    for model in args.models.split(","):
        table = load_profile(args.profiles / f"{model}_latency.csv").latency_table()
        for policy in POLICIES:
            config = SimConfig(cores=args.cores, policy=policy, batching=batching)
            planning = make_planning(table, config)
            for rate in rates:
                for target in targets:
                    plan = nodes_for(planning, config, rate, target, max_nodes=4096)
                    key = (model, rate, target)
                    found = next((r for r in rows if r[:3] == key), None)
                    if found is None:
                        rows.append((model, rate, target, {policy: plan}))
                    else:
                        found[3][policy] = plan
    print(
        f"<!-- python benchmarks/capacity.py {' '.join(argv)}: "
        f"{time.monotonic() - started:.0f} s -->"
    )
    print(
        "| model | req/s | p99 target, ms | nodes, Packrat (auto) | nodes, fat instance | "
        "p99 at that count, auto / fat, ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for model, rate, target, plans in rows:
        auto, fat = plans["auto"], plans["fat"]
        print(
            f"| {model} | {rate:,.0f} | {target:g} | {_nodes(auto)} | {_nodes(fat)} | "
            f"{_p99(auto)} / {_p99(fat)} |"
        )
    _plot(rows, args.plot, args.cores)


def _nodes(plan: CapacityPlan) -> str:
    return "-" if plan.nodes is None else str(plan.nodes)


def _p99(plan: CapacityPlan) -> str:
    chosen = [c for c in plan.tried if c.nodes == plan.nodes]
    return f"{chosen[0].p99_ms:.0f}" if chosen else "-"


def _plot(
    rows: list[tuple[str, float, float, dict[str, CapacityPlan]]], path: Path, cores: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{m}\n{r / 1000:g}k/s, {t:g} ms" for m, r, t, _ in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.7 * len(rows)), 4.2))
    for offset, policy in ((-0.2, "auto"), (0.2, "fat")):
        heights = [p[policy].nodes or 0 for *_, p in rows]
        ax.bar([i + offset for i in x], heights, width=0.4, label=policy)
    ax.set_xticks(list(x), labels, fontsize="x-small", rotation=60, ha="right")
    ax.set_ylabel(f"nodes of {cores} cores")
    ax.set_yscale("log")
    ax.set_title("Nodes for p99 under the target (simulated, paper's profiles)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nplot: {path}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
