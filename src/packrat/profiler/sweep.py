"""Sweep a grid of (threads, batch) cells: the profiler behind `packrat profile`.

Each thread count t gets one worker process pinned to t dedicated physical cores with t
intra-op threads and 1 inter-op thread; that worker then measures every batch size of the grid
(in-process timing of the model's inference, warm-up excluded), so a model is loaded once per
t rather than once per cell. The profile is saved after every cell, so an interrupted sweep
resumes where it stopped: cells already in the file are skipped.

With `passes` > 1 the grid is swept that many times, each pass sampling a cell by the
config's policy (`packrat profile --passes N` gives each its share of one budget), and a
cell's latency is the median of its passes' means: on a shared or virtual machine whose speed
drifts over minutes, a slow stretch then moves one pass of the cells it overlaps, not the
cells, and every cell is measured across the same span of time. Passes alternate the order of
the rows (`pass_order`: thread counts ascending, then descending), so over two passes a
steady drift weighs on every thread count alike.
A resumed sweep adds the passes a cell lacks.

With `asked` batch sizes, cells that cannot appear in an optimal plan for any of them are not
measured (`packrat.profiler.prune`: bounds from the cells measured so far prove every plan with
them slower than one already known); the profile then has gaps, which the optimizer never
needs. A resumed sweep re-derives the same skips from the cells in the file.

With `contention`, each cell is measured with its neighbours: the worker set for t threads is
`cores // t` instances of t threads, and all of them time the batch at once
(`packrat.profiler.contention`). The profile's kind says which way its cells were measured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from packrat.errors import ProfileError
from packrat.models.base import ModelSource
from packrat.pool.config import EngineConfig
from packrat.profiler.contention import contended_plan, measure_contended
from packrat.profiler.interference import BUSY_SHARE, MEASURE_TRIES, least_disturbed
from packrat.profiler.profile_file import Profile, ProfileKind, check_resumable, save_profile
from packrat.profiler.prune import CellPlanner, Order, PruneConfig, Skip
from packrat.progress import NullProgress, Progress
from packrat.stats import CellStats, SamplingPolicy, summarize
from packrat.topology import Topology, allocate, check_cores, machine_info, read_topology
from packrat.types import Plan

if TYPE_CHECKING:
    from packrat.pool.engine import Engine

logger = logging.getLogger(__name__)


def powers_of_two(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to max_batch: the paper's default batch grid."""
    if max_batch < 1:
        raise ProfileError(f"max batch must be >= 1, got {max_batch}")
    grid, b = [], 1
    while b <= max_batch:
        grid.append(b)
        b *= 2
    return tuple(grid)


@dataclass(frozen=True)
class SweepConfig:
    """What to profile: thread counts 1..cores, the batch grid, when to stop sampling,
    whether each cell runs alone (isolated) or beside `cores // t` copies of itself, and the
    batch sizes plans are wanted for.

    asked: None measures every cell; else cells no optimal plan for these batch sizes can
        contain are skipped, for plans made on the profile interpolated between its batch
        sizes (as `packrat serve` plans) if `interpolate`, else on the profiled sizes only.
    policy: how long to sample a cell in one pass (`SamplingPolicy.per_pass` shares one
        budget between passes).
    passes: measure every cell this many times, in passes over the whole grid; a cell's
        latency is the median of its passes, which a few slow minutes of the machine do not
        move.
    rows: measure only the thread counts 1..rows (None: every one), e.g. to profile several
        models row by row side by side; a later sweep with more rows resumes from the file.
    """

    cores: int
    batches: tuple[int, ...]
    policy: SamplingPolicy = field(default_factory=SamplingPolicy)
    contention: bool = False
    asked: tuple[int, ...] | None = None
    interpolate: bool = True
    passes: int = 1
    rows: int | None = None

    @property
    def kind(self) -> ProfileKind:
        """The profile kind these cells make."""
        return ProfileKind.CONTENTION if self.contention else ProfileKind.ISOLATED

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ProfileError(f"cores must be >= 1, got {self.cores}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ProfileError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if self.passes < 1:
            raise ProfileError(f"passes must be >= 1, got {self.passes}")
        if self.rows is not None and not 1 <= self.rows <= self.cores:
            raise ProfileError(f"rows must be 1..{self.cores}, got {self.rows}")

    @property
    def cells(self) -> list[tuple[int, int]]:
        """The grid's cells in the rows measured, thread-major."""
        rows = self.cores if self.rows is None else self.rows
        return [(t, b) for t in range(1, rows + 1) for b in sorted(set(self.batches))]

    def next_cell(self, planner: CellPlanner | EveryCell) -> tuple[int, int] | None:
        """`planner`'s next cell if it is in the rows measured (the planner offers cells
        thread-major), else None."""
        cell = planner.next_cell()
        return cell if cell is not None and (self.rows is None or cell[0] <= self.rows) else None

    def planner(self, measured: Mapping[tuple[int, int], float]) -> CellPlanner | EveryCell:
        """What to measure next, given the cells already `measured` (mean ms)."""
        if self.asked is None:
            return EveryCell(self.cells, measured)
        config = PruneConfig(
            cores=self.cores,
            batches=tuple(sorted(set(self.batches))),
            asked=self.asked,
            interpolate=self.interpolate,
            order=Order.THREAD_MAJOR,  # one worker set per thread count, loaded once
        )
        return CellPlanner(config, measured)

    def needs_measuring(self, profile: Profile | None) -> bool:
        """Whether `profile` (None: no profile yet) lacks a cell this sweep would measure, or
        a pass of one it has."""
        if profile is None:
            return True
        cells = profile.cells
        if any(cells[cell].pass_count < self.passes for cell in self.cells if cell in cells):
            return True
        return self.next_cell(self.planner(_means(profile))) is not None


class EveryCell:
    """The `CellPlanner` interface without pruning: every cell not yet measured, in order."""

    skipped: tuple[Skip, ...] = ()

    def __init__(
        self, cells: list[tuple[int, int]], measured: Mapping[tuple[int, int], float]
    ) -> None:
        self._todo = [cell for cell in cells if cell not in measured]

    def next_cell(self) -> tuple[int, int] | None:
        return self._todo[0] if self._todo else None

    def record(self, threads: int, batch: int, mean_ms: float) -> None:
        self._todo.remove((threads, batch))


def torch_version() -> str:
    """The installed torch version, read without importing torch."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "not installed"


def empty_profile(
    source: ModelSource, config: SweepConfig, topology: Topology, engine: EngineConfig
) -> Profile:
    identity = source.identity()
    policy = config.policy
    return Profile(
        model_name=identity.name,
        content_hash=identity.content_hash,
        machine=machine_info(topology).to_json(),
        torch_version=torch_version(),
        kind=config.kind,
        sampling={
            "warmup_runs": policy.warmup_runs,
            "min_runs": policy.min_runs,
            "max_runs": policy.max_runs,
            "rel_ci": policy.rel_ci,
            "max_time_s": policy.max_time_s,
            "passes": config.passes,
            **({} if config.asked is None else {"pruned_for": _asked_text(config)}),
        },
        engine={"keep_freed_memory": engine.keep_freed_memory},
    )


def _asked_text(config: SweepConfig) -> str:
    """The batch sizes a pruned profile keeps every needed cell for, e.g. "1..64,
    interpolated"."""
    asked = sorted(set(config.asked or ()))
    if asked == list(range(1, asked[-1] + 1)):
        text = f"1..{asked[-1]}"
    else:
        text = ",".join(map(str, asked))
    return f"{text}, {'interpolated' if config.interpolate else 'profiled batch sizes only'}"


def profile_model(
    source: ModelSource,
    config: SweepConfig,
    *,
    out: Path | None = None,
    existing: Profile | None = None,
    topology: Topology | None = None,
    progress: Progress | None = None,
    engine_config: EngineConfig | None = None,
    label: str | None = None,
) -> Profile:
    """Measure the cells of `config` not already in `existing` (every one, or those pruning
    leaves: `SweepConfig.asked`), one worker set per thread count; then, with
    `config.passes` > 1, measure every cell again pass by pass until each has its passes.
    Save to `out` after each cell. `label` names the model in progress and warnings (its
    name by default)."""
    engine_config = engine_config or EngineConfig()
    topology = topology or read_topology()
    check_cores(config.cores, topology)
    progress = progress or NullProgress()
    profile = empty_profile(source, config, topology, engine_config)
    if existing is not None:
        check_resumable(existing, profile, str(out or "the existing profile"))
        profile = replace(existing, sampling={**existing.sampling, "passes": config.passes})
    # Work units ~ batch/threads per pass, so the ETA is not fooled by fast small cells; a
    # skipped cell's units count as done when it is skipped.
    passes = config.passes
    have = {cell: s.pass_count for cell, s in profile.cells.items()}
    total = sum(b / t * max(0, passes - have.get((t, b), 0)) for t, b in config.cells)
    workers = CellWorkers(source, config, topology, engine_config)
    name = label or profile.model_name
    started, reported = False, set[tuple[int, int]]()

    def measure(cell: tuple[int, int]) -> CellStats:
        nonlocal profile, started
        threads, batch = cell
        workers.ready(threads)
        if not started:  # after the model loaded once: a bad model fails first
            beside = " beside its copies (contention)" if config.contention else ""
            progress.start(total, f"profiling {name}{beside}")
            started = True
        samples, others = workers.measure(batch)
        stats = summarize(samples)
        busy = others is not None and others > BUSY_SHARE
        if busy:
            logger.warning(
                "profiling %s: t=%d b=%d was measured %d times while other processes (or the "
                "hypervisor) took %.0f%% of its cores at best; it may read slow: profile on an "
                "idle machine (packrat profile MODEL --fresh)",
                name, threads, batch, MEASURE_TRIES, 100 * (others or 0.0),
            )  # fmt: skip
        old = profile.cells.get(cell)
        profile = profile.with_cell(threads, batch, stats if old is None else old.with_pass(stats))
        if out is not None:
            save_profile(profile, out)
        done = profile.cells[cell].pass_count
        progress.advance(
            batch / threads,
            f"profiling {name}: t={threads} b={batch} {stats.mean_ms:.1f} ms (n={stats.n})"
            + (f", pass {done} of {passes}" if passes > 1 else "")
            + (f", {others:.0%} of its cores taken by others" if busy and others else ""),
        )
        return stats

    try:
        while True:
            planner = config.planner(_means(profile))
            while (cell := config.next_cell(planner)) is not None:
                stats = measure(cell)
                _report_skips(planner.skipped, reported, progress, name, passes)
                planner.record(*cell, stats.mean_ms)
            if started:
                _report_skips(planner.skipped, reported, progress, name, passes)
            for k in range(2, passes + 1):  # later passes: this sweep's cells, row by row
                for cell in pass_order(config.cells, k):
                    if cell in profile.cells and profile.cells[cell].pass_count < k:
                        measure(cell)
            # The medians of the passes may let a cell the first pass skipped back into an
            # optimal plan: measure those too (each round measures at least one new cell).
            if config.next_cell(config.planner(_means(profile))) is None:
                break
    finally:
        workers.close()
    return profile


def pass_order(cells: list[tuple[int, int]], number: int) -> list[tuple[int, int]]:
    """The (threads, batch) `cells` in the order pass `number` (1-based) measures them: row by
    row (one worker set per thread count), rows ascending in odd passes and descending in even
    ones, batch sizes ascending within a row. One pass measures each row minutes after the
    one before, so a machine that speeds up or slows down over the sweep would set the rows
    that plans compare (one wide instance or several narrow ones) apart by its drift; over
    two passes in opposite orders every row's samples centre on the same moment, and a steady
    drift weighs on every row alike."""
    if number % 2:
        return sorted(cells)
    return sorted(cells, key=lambda cell: (-cell[0], cell[1]))


def _means(profile: Profile) -> dict[tuple[int, int], float]:
    return {cell: s.mean_ms for cell, s in profile.cells.items()}


class CellWorkers:
    """The worker set measuring cells of one thread count at a time (a new set when the
    thread count changes): one instance, or with contention as many as the cores hold."""

    def __init__(
        self,
        source: ModelSource,
        config: SweepConfig,
        topology: Topology,
        engine_config: EngineConfig,
    ) -> None:
        self._source, self._config = source, config
        self._topology, self._engine_config = topology, engine_config
        self._engine: Engine | None = None

    def ready(self, threads: int) -> None:
        """Make sure the running worker set has `threads` threads per instance."""
        if self._engine is not None and self._engine.plan.instances[0].threads == threads:
            return
        self.close()
        from packrat.pool.engine import Engine  # the pool pulls in multiprocessing machinery

        config = self._config
        plan = allocate(cell_plan(config, threads, max(config.batches)), self._topology)
        self._engine = Engine(self._source, plan, self._engine_config)
        self._engine.start()

    def measure(
        self, batch: int, policy: SamplingPolicy | None = None
    ) -> tuple[list[float], float | None]:
        """One pass's samples (ms) of a batch of `batch` on the ready worker set, sampled by
        `policy` (default: the sweep's), and the share of its cores' time that something else
        took meanwhile (`CoreUse`; None if not known); measured again while that share is too
        large (`least_disturbed`)."""
        engine = self._engine
        assert engine is not None, "ready() first"
        policy = policy or self._config.policy
        cores = {core for instance in engine.plan.instances for core in instance.cores}
        return least_disturbed(
            lambda: self._measure_once(engine, batch, policy), cores, engine.pool_pids
        )

    def _measure_once(self, engine: Engine, batch: int, policy: SamplingPolicy) -> list[float]:
        if self._config.contention:
            engine.replan(_with_batch(engine.plan, batch))
            return measure_contended(engine, policy)
        return engine.measure(0, batch, policy)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _report_skips(
    skipped: tuple[Skip, ...],
    reported: set[tuple[int, int]],
    progress: Progress,
    name: str,
    passes: int,
) -> None:
    """Count the skipped cells not yet in `reported` as done (all their passes), and add them."""
    for skip in skipped:
        if (skip.threads, skip.batch) in reported:
            continue
        reported.add((skip.threads, skip.batch))
        progress.advance(
            skip.batch / skip.threads * passes,
            f"profiling {name}: skipped t={skip.threads} b={skip.batch} ({skip.reason.value})",
        )


def cell_plan(config: SweepConfig, threads: int, batch: int) -> Plan:
    """The (unallocated) instances that measure cells of `threads` threads: one alone (on
    `threads` cores there is no room for a neighbour), or with contention as many as the
    cores hold."""
    return contended_plan(config.cores if config.contention else threads, threads, batch)


def _with_batch(plan: Plan, batch: int) -> Plan:
    """`plan` with every instance running `batch` (same threads and cores)."""
    instances = tuple(replace(i, batch=batch) for i in plan.instances)
    return replace(plan, batch=batch * len(instances), instances=instances)
