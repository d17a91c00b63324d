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
    SampleOpt,
    ShapeOpt,
    app,
    err,
    guard,
    input_spec,
    int_list,
    out,
)
from packrat.errors import PackratError
from packrat.profiler.contention import AUTO_CONTENTION_CORES, ProfileKindSetting

if TYPE_CHECKING:
    from packrat.profiler.profile_file import Profile
    from packrat.stats import SamplingPolicy


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
    sample_request: SampleOpt = None,
    keep_freed_memory: MallocOpt = True,
    every_cell: Annotated[
        bool,
        typer.Option(
            "--every-cell",
            help="Measure every cell. By default cells that cannot be in an optimal plan for "
            "any batch size up to the grid's largest are skipped (bounds from the cells "
            "measured before them; a plan with them is provably slower).",
        ),
    ] = False,
    contention: Annotated[
        bool | None,
        typer.Option(
            "--contention/--isolated",
            help="Measure each cell <t, b> beside T // t - 1 copies of itself on the other "
            "cores, as a plan runs it (a 'contention' profile, kept apart in the cache), or "
            "alone [default: as packrat serve's --profile-kind auto: contention on 2 to "
            f"{AUTO_CONTENTION_CORES} cores, isolated on more].",
            show_default=False,
        ),
    ] = None,
    passes: Annotated[
        int,
        typer.Option(
            "--passes",
            min=1,
            help="Sweep the grid this many times, each pass with its share of the runs, and "
            "take each cell's median: a machine whose speed drifts over minutes (a shared "
            "host, a VM) then skews one pass, not the profile.",
        ),
    ] = 1,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Measure every cell again, replacing the profile there is (by default it "
            "is resumed: only its missing cells and passes are measured).",
        ),
    ] = False,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="Profile the model on torch, onnxruntime or openvino (converted once, "
            "cached; each backend and precision gets its own profile), or auto: the one "
            "packrat serve would choose [default: auto, or $PACKRAT_BACKEND].",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option("--precision", help="auto (bf16 where native), fp32 or bf16."),
    ] = "auto",
) -> None:
    """Measure batch latency L(t, b) for t = 1..T on pinned cores: one instance alone
    (--isolated), or with its neighbours (--contention); by default as packrat serve would."""

    def body() -> None:
        from packrat.config import default_backend
        from packrat.models.resolve import resolve_model
        from packrat.pool.config import EngineConfig
        from packrat.profiler.backend_select import select_backend
        from packrat.profiler.cache import cached_profile, default_profile_path
        from packrat.profiler.profile_file import load_profile
        from packrat.profiler.sweep import SweepConfig, powers_of_two, profile_model
        from packrat.progress import progress_bar
        from packrat.topology import check_cores, usable_topology

        source = resolve_model(model, input_spec(input_shape, input_dtype), sample_request)
        usable = usable_topology()
        if usable.note:
            err.print(f"packrat: {usable.note}", highlight=False)
        topology = usable.topology
        grid = int_list(batches, "--batches") if batches else powers_of_two(max_batch)
        budget = cores if cores is not None else topology.num_cores
        auto = ProfileKindSetting.AUTO.contention_on(budget)  # as packrat serve would profile
        config = SweepConfig(
            cores=budget,
            batches=grid,
            policy=sampling_policy(rel_ci, max_runs, max_time_s).per_pass(passes),
            contention=auto if contention is None else contention,
            asked=None if every_cell else tuple(range(1, max(grid) + 1)),
            passes=passes,
        )
        check_cores(config.cores, topology)  # before converting and timing backends
        chosen = select_backend(
            source, backend or default_backend(), precision, topology, max(grid)
        )
        source = chosen.source
        if chosen.verdicts or chosen.candidate.backend != "torch":
            err.print(f"backend {chosen.reason}")
        for name, found in chosen.accuracy.items():
            err.print(f"  {name} against torch fp32: {found['summary']}")
        if len(chosen.contenders) > 1:
            others = ", ".join(str(c) for c in chosen.contenders if c != chosen.candidate)
            err.print(
                f"  profiling {chosen.candidate}; packrat serve also profiles {others} (fast on "
                "some cell) and lets the plans choose (--backend names one to profile here)"
            )
        engine = EngineConfig(keep_freed_memory=keep_freed_memory)
        path = output or default_profile_path(
            source.identity(),
            topology,
            keep_freed_memory=keep_freed_memory,
            contention=config.contention,
        )
        if fresh or not path.exists():
            existing = None
        elif output is None:  # the cache's: resumed unless unreadable or measured by an old method
            existing = cached_profile(path)
        else:  # the user's file: resumed or refused, never overwritten unasked
            existing = load_profile(path)
        if fresh and path.exists():
            err.print(f"measuring afresh: {path} is replaced")
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
        skipped = sum(cell not in result.cells for cell in config.cells)
        if skipped:
            out.print(
                f"{skipped} of {len(config.cells)} cells skipped: no optimal plan for a batch "
                f"of 1..{max(grid)} can contain them (--every-cell measures them)"
            )
        out.print(f"profile written to {path}")

    guard(body)


def sampling_policy(rel_ci: float, max_runs: int, max_time_s: float) -> SamplingPolicy:
    """The stopping rule of the options; fewer --max-runs than the usual least runs (5) lower
    that least number too. PackratError for values out of range."""
    from packrat.stats import SamplingPolicy

    if max_runs < 2:
        raise PackratError(f"--max-runs must be at least 2 (a cell's spread needs two runs), "
                           f"got {max_runs}")  # fmt: skip
    least = min(SamplingPolicy().min_runs, max_runs)
    try:
        return SamplingPolicy(
            min_runs=least, max_runs=max_runs, rel_ci=rel_ci, max_time_s=max_time_s
        )
    except ValueError as exc:
        raise PackratError(
            f"bad sampling option (--rel-ci, --max-runs, --max-time): {exc}"
        ) from None


def print_profile(p: Profile) -> None:
    """The profile as a threads x batch table of mean latency +- 95% CI."""
    batches = sorted({b for _, b in p.cells})
    table = Table(title=f"{p.model_name}: mean batch latency (ms) +- 95% CI, {p.kind}")
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
