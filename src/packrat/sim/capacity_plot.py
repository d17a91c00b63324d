"""A capacity plan as a picture: each node count tried, its p99 against the target."""

from __future__ import annotations

from pathlib import Path

from packrat.sim.capacity import CapacityPlan


def plot_capacity(plan: CapacityPlan, path: Path, title: str) -> None:
    """Write a PNG of p99 (log scale) per node count, the target as a line, the answer marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served = [c for c in plan.tried if c.refused == 0]
    overloaded = [c for c in plan.tried if c.refused > 0]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(
        [c.nodes for c in served],
        [c.p99_ms for c in served],
        "o-",
        label="p99, every request served",
    )
    if overloaded:
        ax.plot(
            [c.nodes for c in overloaded],
            [c.p99_ms for c in overloaded],
            "x",
            color="tab:red",
            label="some requests refused (503)",
        )
    ax.axhline(plan.target_p99_ms, color="gray", linestyle="--", label="target p99")
    if plan.nodes is not None:
        ax.axvline(plan.nodes, color="tab:green", linestyle=":", label=f"{plan.nodes} nodes")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(f"nodes of {plan.cores} cores")
    ax.set_ylabel("p99 latency, ms")
    ax.set_title(f"{title}: {plan.rate_rps:g} req/s")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
