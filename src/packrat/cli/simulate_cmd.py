"""`packrat simulate`: a Packrat server on T cores, simulated from a profile. No torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from packrat.cli.app import app, err, guard, out
from packrat.controller.batching import BatchingConfig
from packrat.errors import PackratError

if TYPE_CHECKING:
    from packrat.controller.planning import Planning
    from packrat.optimizer.table import LatencyTable
    from packrat.sim import SimConfig, SimResult
    from packrat.sim.capacity import CapacityPlan
    from packrat.workload.schedule import OpenLoop

BATCHING = BatchingConfig()
"""packrat serve's batching, the simulated server's by default."""

PROGRESS_FROM_REQUESTS = 200_000
"""Simulations with fewer requests take under a second: no progress bar."""


@app.command()
def simulate(
    profile_path: Annotated[
        Path, typer.Option("--profile", "-p", help="Profile JSON, or a published CSV.")
    ],
    cores: Annotated[int, typer.Option("--cores", "-T", help="Cores T of the simulated server.")],
    rate_rps: Annotated[
        float | None, typer.Option("--rate", help="Poisson arrivals, requests/s.")
    ] = None,
    duration_s: Annotated[
        float | None, typer.Option("--duration", help="Seconds of simulated load (with --rate).")
    ] = None,
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            help="auto, follow, fixed (as packrat serve --policy), fat (--fat), single "
            "(T one-thread instances), or a plan such as '<2,1,4>' (--plan).",
        ),
    ] = "auto",
    estimator: Annotated[
        str | None,
        typer.Option(
            "--estimator",
            help="Settings of the 'follow' estimator, as packrat serve --estimator, e.g. "
            "'alpha=0.25,window=8,cooldown_s=1' [default: packrat serve's].",
            show_default=False,
        ),
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", help="Largest batch; plans are made for it.")
    ] = BATCHING.max_batch_size,
    max_batch_delay_ms: Annotated[
        float,
        typer.Option(
            "--max-batch-delay",
            help="Milliseconds a batch waits for more (0, serve's default: none).",
        ),
    ] = BATCHING.max_batch_delay_ms,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Requests queued before more get 503.")
    ] = BATCHING.max_queue,
    max_queue_wait_ms: Annotated[
        float,
        typer.Option(
            "--max-queue-wait",
            help="Once the queue has overflowed, until it drains: the ms of batches it is "
            "held to (0: not held).",
        ),
    ] = BATCHING.max_queue_wait_ms,
    arrivals: Annotated[
        str | None,
        typer.Option(
            "--arrivals",
            help="poisson (--rate, --duration), steps (--steps) or trace (--trace) "
            "[default: the one whose options are given].",
            show_default=False,
        ),
    ] = None,
    steps_text: Annotated[
        str | None,
        typer.Option("--steps", help='Poisson phases RATE:SECONDS, e.g. "2:40,7:40,2:40".'),
    ] = None,
    trace_path: Annotated[
        Path | None,
        typer.Option(
            "--trace", help="Arrival times (s) one a line, or a loadgen CSV (its scheduled_s)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the arrivals and the noise.")] = 0,
    overhead_ms: Annotated[
        float, typer.Option("--overhead-ms", help="Fixed time added to every batch, ms.")
    ] = 1.0,
    switch_ms: Annotated[
        float, typer.Option("--switch-ms", help="Time of one switch of plans, ms.")
    ] = 1.0,
    noise_cv: Annotated[
        float,
        typer.Option("--noise", help="Coefficient of variation of each instance's latency."),
    ] = 0.0,
    synthetic_cores: Annotated[
        int | None,
        typer.Option(
            "--synthetic-cores",
            help="Simulate a profile extrapolated to this many cores (an Amdahl fit of "
            "--profile, docs/simulate.md).",
        ),
    ] = None,
    synthetic_fit: Annotated[
        str,
        typer.Option(
            "--synthetic-fit",
            help="The synthetic profile's model: amdahl+threads (Amdahl's law plus a cost per "
            "thread) or amdahl (no per-thread cost: the fat instance's best case).",
        ),
    ] = "amdahl+threads",
    interpolate: Annotated[
        bool,
        typer.Option(
            "--interpolate/--no-interpolate",
            help="Plan with every batch size interpolated, as the server does, or with the "
            "profiled ones only (faster for large batches on many cores).",
        ),
    ] = True,
    chunks: Annotated[
        bool,
        typer.Option(
            "--chunks/--no-chunks",
            help="Instances run their share in chunks where the profile says that is faster, "
            "as the server does (with --interpolate), or always whole, as the paper's plans.",
        ),
    ] = True,
    max_workers: Annotated[
        int | None,
        typer.Option(
            "--max-workers",
            min=1,
            help="Simulate workers that cannot move (OpenVINO's): at most this many, one per "
            "threads and cores, as `packrat serve --max-workers` keeps them [default: workers "
            "that move, any plan].",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        str, typer.Option("--mode", help="Published CSVs: script (TorchScript) or eager rows.")
    ] = "script",
    target_p99_ms: Annotated[
        float | None,
        typer.Option(
            "--target-p99",
            help="Capacity planning: how many nodes of T cores serve --rate with p99 under "
            "this many ms and no 503 (each node gets a random share of the requests).",
        ),
    ] = None,
    max_nodes: Annotated[
        int, typer.Option("--max-nodes", help="With --target-p99: the most nodes to try.")
    ] = 1000,
    plot_path: Annotated[
        Path | None,
        typer.Option("--plot", help="With --target-p99: write p99 per node count as a PNG."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Simulate a Packrat server: arrivals, dynamic batching, plans and policy, in seconds.

    Runs the server's own batching rules, optimizer, placement, split and plan policy over
    simulated time, with each instance taking its profiled latency. T may exceed this
    machine's cores. With --target-p99, finds how many such nodes serve --rate.
    """

    def body() -> None:
        from packrat.controller.estimator import EstimatorConfig
        from packrat.profiler.profile_file import load_profile
        from packrat.progress import progress_bar
        from packrat.sim import (
            SimConfig,
            Timing,
            make_planning,
            simulate_profile,
            synthetic_profile,
        )

        profile = load_profile(profile_path, mode=mode)
        if synthetic_fit not in ("amdahl+threads", "amdahl"):
            raise PackratError(
                f"--synthetic-fit must be amdahl+threads or amdahl, got {synthetic_fit!r}"
            )
        if synthetic_cores is not None:
            per_thread = synthetic_fit == "amdahl+threads"
            profile, _ = synthetic_profile(profile, synthetic_cores, per_thread)
        try:
            batching = BatchingConfig(
                max_batch_size, max_batch_delay_ms, max_queue, max_queue_wait_ms
            )
        except ValueError as exc:
            raise PackratError(str(exc)) from None
        try:
            settings = EstimatorConfig.parse(estimator or "")
        except ValueError as exc:
            raise PackratError(f"--estimator: {exc}") from None
        config = SimConfig(
            cores=cores,
            policy=policy,
            estimator=settings,
            batching=batching,
            timing=Timing(overhead_ms, switch_ms, noise_cv),
            seed=seed,
            interpolate=interpolate,
            chunks=chunks,
            max_workers=max_workers,
        )
        table = profile.latency_table()
        if target_p99_ms is None and plot_path is not None:
            raise PackratError("--plot draws a capacity plan: give --target-p99 too")
        if target_p99_ms is not None:
            if rate_rps is None or steps_text is not None or trace_path is not None:
                raise PackratError("--target-p99 needs --rate (and no --steps or --trace)")
            title = f"{profile.model_name}, policy {policy}"
            found = _capacity(table, config, rate_rps, target_p99_ms, max_nodes)
            if as_json:
                print(json.dumps({"model": profile.model_name, **found.to_json()}))
            else:
                _print_capacity(found, title)
            if plot_path is not None:
                from packrat.sim.capacity_plot import plot_capacity

                plot_capacity(found, plot_path, title)
                err.print(f"plot: {plot_path}")
            return
        load = _load(arrivals, rate_rps, duration_s, steps_text, trace_path, seed)
        planning = make_planning(table, config)
        if config.max_workers is not None and not as_json:
            _print_budget(planning, config.max_workers)
        if load.num_requests >= PROGRESS_FROM_REQUESTS and not as_json:
            with progress_bar(err) as progress:
                result = simulate_profile(planning, config, load, progress)
        else:
            result = simulate_profile(planning, config, load)
        if as_json:
            print(json.dumps(_json(result, config, profile.model_name)))
            return
        _print(result, f"{profile.model_name} on T={cores} cores, policy {policy}")

    guard(body)


def _capacity(
    table: LatencyTable,
    config: SimConfig,
    rate_rps: float,
    target_p99_ms: float,
    max_nodes: int,
) -> CapacityPlan:
    from packrat.sim import SimError
    from packrat.sim.capacity import nodes_for

    try:
        return nodes_for(table, config, rate_rps, target_p99_ms, max_nodes=max_nodes)
    except SimError as exc:
        raise PackratError(str(exc)) from None


def _print_budget(planning: Planning, max_workers: int) -> None:
    """What --max-workers changed in the plans (on stderr, before the simulation)."""
    budget = planning.budget()
    if budget is None:
        needed = len(planning.layouts())
        err.print(f"--max-workers {max_workers}: the optimal plans need {needed}; all kept")
        return
    err.print(
        f"--max-workers {max_workers}: {budget.kept} workers kept of the {budget.needed} the "
        f"optimal plans need; plans predicted {budget.mean_slowdown:.3f}x the optimal latency "
        f"on average over batch sizes, {budget.max_slowdown:.3f}x at most"
    )


def _print_capacity(plan: CapacityPlan, title: str) -> None:
    table = Table(title=f"{title}: nodes of {plan.cores} cores for {plan.rate_rps:g} req/s")
    for column in ("nodes", "req/s per node", "requests", "503", "p50 ms", "p99 ms", "meets"):
        table.add_column(column, justify="right")
    for count in plan.tried:
        table.add_row(
            str(count.nodes),
            f"{count.rate_per_node_rps:.1f}",
            str(count.requests),
            str(count.refused),
            f"{count.p50_ms:.1f}",
            f"{count.p99_ms:.1f}",
            "yes" if count.meets else "no",
        )
    out.print(table)
    if plan.nodes is None:
        most = plan.tried[-1].nodes
        out.print(f"no count up to {most} nodes keeps p99 under {plan.target_p99_ms:g} ms")
    else:
        out.print(
            f"{plan.nodes} nodes of {plan.cores} cores serve {plan.rate_rps:g} req/s with p99 "
            f"under {plan.target_p99_ms:g} ms and no 503 (one node's random share simulated)"
        )


def _load(
    kind: str | None,
    rate_rps: float | None,
    duration_s: float | None,
    steps_text: str | None,
    trace_path: Path | None,
    seed: int,
) -> OpenLoop:
    from packrat.sim import poisson_load, stepped, trace

    given = [
        name
        for name, value in (("poisson", rate_rps), ("steps", steps_text), ("trace", trace_path))
        if value is not None
    ]
    if kind is None:
        if len(given) != 1:
            raise PackratError("give one load: --rate and --duration, --steps, or --trace")
        kind = given[0]
    if kind == "poisson":
        if rate_rps is None or duration_s is None:
            raise PackratError("--arrivals poisson needs --rate and --duration")
        return poisson_load(rate_rps, duration_s, seed)
    if kind == "steps":
        if steps_text is None:
            raise PackratError('--arrivals steps needs --steps, e.g. "2:40,7:40,2:40"')
        return stepped(steps_text, seed)
    if kind == "trace":
        if trace_path is None:
            raise PackratError("--arrivals trace needs --trace FILE")
        return trace(trace_path)
    raise PackratError(f"--arrivals must be poisson, steps or trace, got {kind!r}")


def _json(result: SimResult, config: SimConfig, model: str) -> dict[str, object]:
    from dataclasses import asdict

    return {"model": model, "config": asdict(config), **result.to_json()}


def _print(result: SimResult, title: str) -> None:
    phases = result.phases()
    rows = [*phases, result.overall()] if len(phases) > 1 else [result.overall()]
    table = Table(title=f"{title}: latency from arrival to answer, ms")
    for column in ("stretch", "requests", "served", "503", "req/s", "mean", "p50", "p90", "p99"):
        table.add_column(column, justify="left" if column == "stretch" else "right")
    for k, counts in enumerate(rows):
        latency = counts.latency
        stats = (
            ["-"] * 4
            if latency is None
            else [
                f"{v:.1f}"
                for v in (latency.mean_ms, latency.p50_ms, latency.p90_ms, latency.p99_ms)
            ]
        )
        table.add_row(
            counts.name,
            str(counts.requests),
            str(counts.served),
            str(counts.refused),
            f"{counts.throughput_rps:.1f}",
            *stats,
            end_section=k == len(rows) - 2 and len(rows) > 1,
        )
    out.print(table)
    out.print(
        f"{result.batch_sizes.size} batches, mean size {result.mean_batch_size:.2f}; "
        f"{result.switches} switches"
    )
    plans = Table(title="time per plan")
    plans.add_column("plan")
    plans.add_column("seconds", justify="right")
    plans.add_column("share", justify="right")
    total = sum(result.time_per_plan_s.values()) or 1.0
    for plan, seconds in sorted(result.time_per_plan_s.items(), key=lambda kv: -kv[1]):
        plans.add_row(plan, f"{seconds:.1f}", f"{seconds / total:.1%}")
    out.print(plans)
