"""`packrat plan`: the fastest split of T cores and batch B, from a profile. No torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from packrat.cli.app import app, guard, out


@app.command()
def plan(
    profile_path: Annotated[
        Path, typer.Option("--profile", "-p", help="Profile JSON, or a published CSV.")
    ],
    cores: Annotated[int, typer.Option("--cores", "-T", help="Core budget T.")],
    batch: Annotated[int, typer.Option("--batch", "-B", help="Batch size B.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    mode: Annotated[
        str, typer.Option("--mode", help="Published CSVs: script (TorchScript) or eager rows.")
    ] = "script",
    chunks: Annotated[
        bool,
        typer.Option(
            "--chunks",
            help="Plan as `packrat serve` does: the profile interpolated to every batch size, "
            "each instance running its share in chunks where that is faster.",
        ),
    ] = False,
) -> None:
    """Plan the fastest <instances, threads, batch> split of T cores and batch B.

    By default on the profiled batch sizes with whole shares, as the paper's optimizer;
    --chunks plans as the server does. T may exceed this machine's cores (plans for the
    profile's machine): cores are then numbered on a single-socket machine of T cores.
    """

    def body() -> None:
        from packrat.optimizer import PlanTable
        from packrat.optimizer.chunks import chunked
        from packrat.profiler.profile_file import load_profile
        from packrat.topology import (
            allocate,
            format_cpu_list,
            synthetic_topology,
            usable_topology,
        )

        prof = load_profile(profile_path, mode=mode)
        table = prof.latency_table()
        sizes = None
        if chunks:
            table, sizes = chunked(table.interpolated())
        chosen = PlanTable(table, cores, batch).plan(cores, batch)
        here = usable_topology().topology
        local = cores <= here.num_cores
        topo = here if local else synthetic_topology(sockets=1, cores_per_socket=cores)
        placed = allocate(chosen, topo)
        fat = table.get(cores, batch)
        if as_json:
            instances = [
                {"threads": i.threads, "batch": i.batch, "cores": list(i.cores)}
                | ({} if sizes is None else {"chunk": sizes.at(i.threads, i.batch) or i.batch})
                for i in placed.instances
            ]
            print(
                json.dumps(
                    {
                        "cores": cores,
                        "batch": batch,
                        "latency_ms": placed.latency_ms,
                        "fat_latency_ms": fat,
                        "instances": instances,
                    }
                )
            )
            return
        t = Table(title=f"{prof.model_name}: plan for T={cores} cores, B={batch}")
        columns = ["instance", "threads", "batch", "cores", "predicted ms"]
        for col in columns[:3] + (["chunks of"] if sizes is not None else []) + columns[3:]:
            t.add_column(col, justify="right")
        for k, inst in enumerate(placed.instances):
            ms = table.get(inst.threads, inst.batch)
            chunk = [] if sizes is None else [str(sizes.at(inst.threads, inst.batch) or "whole")]
            t.add_row(
                str(k),
                str(inst.threads),
                str(inst.batch),
                *chunk,
                format_cpu_list(inst.cores),
                "" if ms is None else f"{ms:.2f}",
            )
        out.print(t)
        out.print(f"plan {placed.describe()}: predicted latency {placed.latency_ms:.2f} ms")
        if fat is None:
            out.print(f"fat instance <1,{cores},{batch}>: not profiled, no speedup to report")
        else:
            out.print(
                f"fat instance <1,{cores},{batch}>: {fat:.2f} ms; "
                f"predicted speedup {fat / placed.latency_ms:.2f}x"
            )
        if not local:
            out.print(
                f"(cores numbered on a {cores}-core single-socket machine; this machine has fewer)"
            )

    guard(body)
