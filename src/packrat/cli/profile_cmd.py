"""`packrat profile`: measure L(t, b) on pinned cores, with a progress bar; resumable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from packrat.cli.app import (
    CoresOpt,
    DtypeOpt,
    MallocOpt,
    ModelArg,
    ShapeOpt,
    app,
    err,
    guard,
    input_spec,
    int_list,
    out,
)

if TYPE_CHECKING:
    from packrat.profiler.profile_file import Profile


@app.command()
def profile(
    model: ModelArg,
    cores: CoresOpt = None,
    batches: Annotated[
        str | None,
        typer.Option(
            "--batches", help="Batch grid, e.g. 1,2,4,8 (default: powers of two up to --max-batch)."
        ),
    ] = None,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Largest batch of the default grid.")
    ] = 32,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Profile JSON to write (default: the cache); cells already in it are skipped.",
        ),
    ] = None,
    rel_ci: Annotated[
        float,
        typer.Option(
            "--rel-ci", help="Stop a cell once its 95% CI is within +- this fraction of the mean."
        ),
    ] = 0.03,
    max_runs: Annotated[int, typer.Option("--max-runs", help="Most timed runs per cell.")] = 200,
    max_time_s: Annotated[
        float, typer.Option("--max-time", help="Most seconds of timed runs per cell.")
    ] = 30.0,
    input_shape: ShapeOpt = None,
    input_dtype: DtypeOpt = "float32",
    keep_freed_memory: MallocOpt = True,
) -> None:
    """Measure single-instance batch latency L(t, b) for t = 1..T on pinned cores."""

    def body() -> None:
        from packrat.models.resolve import resolve_model
        from packrat.pool.config import EngineConfig
        from packrat.profiler.cache import default_profile_path
        from packrat.profiler.profile_file import load_profile
        from packrat.profiler.stats import SamplingPolicy
        from packrat.profiler.sweep import SweepConfig, powers_of_two, profile_model
        from packrat.progress import progress_bar
        from packrat.topology import read_topology

        source = resolve_model(model, input_spec(input_shape, input_dtype))
        topology = read_topology()
        grid = int_list(batches, "--batches") if batches else powers_of_two(max_batch)
        config = SweepConfig(
            cores=cores if cores is not None else topology.num_cores,
            batches=grid,
            policy=SamplingPolicy(rel_ci=rel_ci, max_runs=max_runs, max_time_s=max_time_s),
        )
        engine = EngineConfig(keep_freed_memory=keep_freed_memory)
        path = output or default_profile_path(
            source.identity(), topology, keep_freed_memory=keep_freed_memory
        )
        existing = load_profile(path) if path.exists() else None
        if existing is not None:
            err.print(f"resuming {path}: {len(existing.cells)} cells already measured")
        with progress_bar(err) as bar:
            result = profile_model(
                source,
                config,
                out=path,
                existing=existing,
                topology=topology,
                progress=bar,
                engine_config=engine,
            )
        print_profile(result)
        out.print(f"profile written to {path}")

    guard(body)


def print_profile(p: Profile) -> None:
    """The profile as a threads x batch table of mean latency +- 95% CI."""
    batches = sorted({b for _, b in p.cells})
    table = Table(title=f"{p.model_name}: mean batch latency (ms) +- 95% CI")
    table.add_column("threads", justify="right")
    for b in batches:
        table.add_column(f"b={b}", justify="right")
    for t in sorted({t for t, _ in p.cells}):
        row = []
        for b in batches:
            s = p.cells.get((t, b))
            row.append("" if s is None else f"{s.mean_ms:.1f} +-{s.ci95_ms:.1f}")
        table.add_row(str(t), *row)
    out.print(table)
