"""`packrat bench`: Packrat's plan against the fat instance and every homogeneous plan."""

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
from packrat.errors import PackratError

if TYPE_CHECKING:
    from packrat.bench.offline import LayoutMemory, Measurement
    from packrat.bench.report import BatchSummary

_MIB = 1024 * 1024


@app.command()
def bench(
    model: ModelArg,
    batches: Annotated[
        str, typer.Option("--batches", help="Batch sizes B to measure.")
    ] = "1,2,4,8,16,32",
    cores: CoresOpt = None,
    profile_path: Annotated[
        Path | None,
        typer.Option(
            "--profile",
            "-p",
            help="Profile to plan with (default: the cached one, made first if missing).",
        ),
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where the CSV and PNG go.")
    ] = Path("bench-results"),
    input_shape: ShapeOpt = None,
    input_dtype: DtypeOpt = "float32",
    keep_freed_memory: MallocOpt = True,
) -> None:
    """Measure Packrat's plan against the fat instance and every homogeneous plan.

    Each configuration runs its instances concurrently, end to end; results go to a CSV and
    a PNG in --output-dir.
    """

    def body() -> None:
        from packrat.bench.offline import BenchConfig, run_bench
        from packrat.bench.report import mean_speedup, summarize_batches, write_csv, write_plot
        from packrat.models.resolve import resolve_model
        from packrat.pool.config import EngineConfig
        from packrat.profiler.cache import cached_profile, default_profile_path
        from packrat.profiler.profile_file import load_profile
        from packrat.profiler.sweep import SweepConfig, powers_of_two, profile_model
        from packrat.progress import progress_bar
        from packrat.topology import check_cores, usable_topology

        source = resolve_model(model, input_spec(input_shape, input_dtype))
        usable = usable_topology()
        if usable.note:
            err.print(f"packrat: {usable.note}", highlight=False)
        topology = usable.topology
        grid = int_list(batches, "--batches")
        budget = cores if cores is not None else topology.num_cores
        check_cores(budget, topology)
        engine = EngineConfig(keep_freed_memory=keep_freed_memory)
        path = profile_path or default_profile_path(
            source.identity(), topology, keep_freed_memory=keep_freed_memory
        )
        with progress_bar(err) as bar:
            if profile_path is not None:
                prof = load_profile(profile_path)
            else:
                cached = cached_profile(path)
                sweep = SweepConfig(cores=budget, batches=powers_of_two(max(grid)))
                if cached is not None and all(c in cached.cells for c in sweep.cells):
                    prof = cached
                else:
                    err.print(f"profiling {model} first (cached in {path})")
                    prof = profile_model(
                        source,
                        sweep,
                        out=path,
                        existing=cached,
                        topology=topology,
                        progress=bar,
                        engine_config=engine,
                    )
            measured_with = prof.engine.get("keep_freed_memory", keep_freed_memory)
            if measured_with != keep_freed_memory:
                flag = "--keep-freed-memory" if measured_with else "--release-freed-memory"
                raise PackratError(
                    f"{path} was measured with {flag}; bench with the same setting, or profile "
                    "anew, so that predictions and measurements are comparable"
                )
            config = BenchConfig(cores=budget, batches=grid)
            result = run_bench(source, prof, config, topology, progress=bar, engine_config=engine)
        stem = f"{prof.model_name}-T{budget}"
        write_csv(result.measurements, output_dir / f"{stem}.csv")
        write_plot(
            result.measurements, output_dir / f"{stem}.png", f"{prof.model_name}, T={budget}"
        )
        summaries = summarize_batches(result.measurements)
        print_summary(f"{prof.model_name}, T={budget}", summaries)
        out.print(f"mean speedup of Packrat over the fat instance: {mean_speedup(summaries):.2f}x")
        print_memory(result.memory)
        out.print(f"wrote {output_dir / (stem + '.csv')} and {output_dir / (stem + '.png')}")

    guard(body)


def _ms(m: Measurement) -> str:
    return f"{m.stats.mean_ms:.1f} +-{m.stats.ci95_ms:.1f}"


def print_summary(title: str, summaries: list[BatchSummary]) -> None:
    """Per batch size: Packrat, fat, single-thread and best measured, with 95% CIs."""
    t = Table(title=f"{title}: batch latency, ms (mean +- 95% CI)")
    for col in (
        "B",
        "Packrat plan",
        "Packrat",
        "fat",
        "single",
        "best measured",
        "speedup vs fat",
        "predicted",
        "Packrat vs best",
    ):
        t.add_column(col, justify="right")
    for s in summaries:
        gap = f"{s.gap_to_best:+.1%}"
        if s.gap_to_best > 0.05:
            gap += " (CIs overlap)" if s.within_noise_of_best else " (!)"
        t.add_row(
            str(s.batch),
            s.packrat.plan,
            _ms(s.packrat),
            _ms(s.fat),
            _ms(s.single),
            f"{s.best.plan} {_ms(s.best)}",
            f"{s.speedup_over_fat:.2f}x",
            "" if s.predicted_speedup is None else f"{s.predicted_speedup:.2f}x",
            gap,
        )
    out.print(t)


def print_memory(layouts: list[LayoutMemory]) -> None:
    """Workers' memory per layout: one shared copy of the weights, not one per instance."""
    t = Table(title="memory of the workers (PSS counts shared pages once)")
    for col in (
        "instances",
        "threads each",
        "PSS total MiB",
        "RSS sum MiB",
        "weights MiB",
        "PSS if each had a copy",
    ):
        t.add_column(col, justify="right")
    for m in sorted(layouts, key=lambda m: m.instances):
        unshared = m.pss_bytes + (m.instances - 1) * m.weights_bytes
        t.add_row(
            str(m.instances),
            ",".join(map(str, m.layout)),
            f"{m.pss_bytes / _MIB:.0f}",
            f"{m.rss_bytes / _MIB:.0f}",
            f"{m.weights_bytes / _MIB:.0f}",
            f"{unshared / _MIB:.0f}",
        )
    out.print(t)
