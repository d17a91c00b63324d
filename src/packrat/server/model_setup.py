"""What registering a model finds out before it can start: its source, its cores, and the
latency table it is planned and split with.

- The source (`resolve_source`): a zoo name, or a file; with a model store, every file spec
  must resolve (symlinks followed) inside it, relative specs taken relative to it; without
  one, files are accepted only from the operator (`files_anywhere`), never from the HTTP API.
- The cores (`model_topology`): the physical cores of the CPU ids given, all of which this
  process may use, or of every CPU it may use.
- The table (`latency_table`): the profile given, else the cached one (`cached_profile`: one
  an older Packrat measured by a method since changed is measured afresh), completed with a
  quick sweep where cells are missing (batch sizes 1, 2, 4, ... up to
  max_batch_size, every thread count of its cores; `QUICK_POLICY` in `QUICK_PASSES` passes;
  cells that no optimal plan for a batch up to max_batch_size can contain are skipped).
  Pinned and fat plans are not profiled: a cached profile is still used to split their
  batches.
- The backend by the plans (`serving_table`): where the probe choice kept several contenders,
  each is profiled as above, in two passes, one thread count of every contender in turn
  before the next (`profile_order`), and their plans decide
  (`profiler.backend_plan`): one of them, or a mix by cell. Then, for every model, instances
  run batches in chunks wherever the table says that is faster (`with_chunks`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from packrat.errors import ModelError
from packrat.models.base import ModelIdentity, ModelSource
from packrat.models.resolve import resolve_model
from packrat.models.torchserve_archive import is_archive_dir
from packrat.models.zoo import ZOO
from packrat.optimizer.table import LatencyTable
from packrat.pool.config import EngineConfig
from packrat.profiler.backend_choice import Candidate
from packrat.profiler.backend_plan import (
    CONTENDER_PASSES,
    needs_plans,
    profile_order,
    serve_by_plans,
    with_chunks,
)
from packrat.profiler.backend_select import Selection
from packrat.profiler.cache import cached_profile, default_profile_path
from packrat.profiler.profile_file import load_profile
from packrat.profiler.sweep import SweepConfig, powers_of_two, profile_model
from packrat.progress import Progress
from packrat.server.errors import BadRequest
from packrat.server.model_config import ModelConfig
from packrat.stats import SamplingPolicy
from packrat.topology import Topology, format_cpu_list, read_topology, usable_topology

logger = logging.getLogger(__name__)

QUICK_POLICY = SamplingPolicy(warmup_runs=1, min_runs=3, max_runs=20, rel_ci=0.05, max_time_s=5)
"""Sampling for profiles made at registration: seconds per cell, not minutes."""

QUICK_PASSES = 2
"""Passes of a profile made at registration, the rows in opposite orders (`sweep.pass_order`), each
sampling a cell by the whole `QUICK_POLICY` (the plans benchmarked at every batch size,
docs/benchmarks/backends-all-sizes-*.md, were made on such profiles). In one pass the rows that
plans weigh against each other are measured minutes apart, and the machine's drift over those
minutes (10-30% on a virtual machine) decided between plans a few percent apart: on 2 cores,
where two one-thread instances of gpt2 run a large batch 3-4% faster than one two-thread
instance side by side, one such profile read them from 7% faster to 4% slower across batch
sizes, and another chose the two-thread instance from batch 10 up
(docs/benchmarks/backends-all-sizes-gpt2.md)."""


def resolve_source(
    config: ModelConfig, model_store: Path | None, *, files_anywhere: bool
) -> ModelSource:
    """The source for `config.spec`, with model files confined to `model_store`. Raises
    BadRequest for a spec that does not resolve or a file it may not load."""
    spec, sample = config.spec, config.sample_request
    try:
        if spec in ZOO or "://" in spec:  # resolve_model refuses URLs with its own message
            return resolve_model(spec, sample_request=sample)
        if model_store is None:
            if not files_anywhere:
                raise BadRequest(
                    f"model '{spec}' is not a zoo model, and no model store is configured "
                    "to load files from"
                )
            return resolve_model(spec, sample_request=sample)
        root = model_store.expanduser().resolve()
        path = (root / Path(spec).expanduser()).resolve()
        if not path.is_relative_to(root):
            raise BadRequest(f"model file '{spec}' is outside the model store")
        if not (path.is_file() or is_archive_dir(path)):  # without the server's paths
            raise BadRequest(f"model '{spec}' is neither a zoo model nor a file in the store")
        return resolve_model(str(path), sample_request=sample)
    except ModelError as exc:
        raise BadRequest(str(exc)) from exc


def default_name(spec: str) -> str:
    """The name a model is served under when its registration gives none."""
    return spec if spec in ZOO else Path(spec.rstrip("/")).stem


def model_topology(cores: Sequence[int] | None) -> Topology:
    """The physical cores of `cores` (CPU ids), or of every CPU this process may use.
    BadRequest for CPUs this process may not use."""
    if cores is None:
        return usable_topology().topology
    allowed = os.sched_getaffinity(0)
    outside = sorted(set(cores) - allowed)
    if outside:
        raise BadRequest(
            f"cores {format_cpu_list(outside)} are not CPUs this server may use "
            f"({format_cpu_list(allowed)})"
        )
    return read_topology(allowed=set(cores))


async def latency_table(
    config: ModelConfig,
    source: ModelSource,
    identity: ModelIdentity,
    topology: Topology,
    progress: Progress,
    *,
    engine_config: EngineConfig,
    contention: bool,
    passes: int | None = None,
    rows: int | None = None,
    label: str | None = None,
    measure: bool = True,
) -> LatencyTable | None:
    """The latency table to plan and split with; None for pinned or fat plans without a
    cached profile (they are served without profiling), or where cells are missing and not
    `measure`. A sweep runs in a thread under `engine_config`, beside copies of the model if
    `contention`, cached apart, until each cell (of thread counts 1..`rows`, None: all) has
    `passes` passes (None: a new profile `QUICK_PASSES`, a cached one those it was made with,
    so a profile made by `packrat profile` is used as it is); its progress calls the model
    `label` (its name by default)."""
    if config.profile is not None:
        return load_profile(config.profile).latency_table()
    path = default_profile_path(
        identity,
        topology,
        keep_freed_memory=engine_config.keep_freed_memory,
        contention=contention,
    )
    cached = cached_profile(path)
    if config.choice is not None and config.choice.pinned:
        return cached.latency_table() if cached is not None else None
    if passes is None:
        passes = QUICK_PASSES if cached is None else int(cached.sampling.get("passes", 1))
    sweep = SweepConfig(
        topology.num_cores,
        powers_of_two(config.batching.max_batch_size),
        QUICK_POLICY,
        contention=contention,
        asked=tuple(range(1, config.batching.max_batch_size + 1)),  # every size it plans for
        passes=passes,
        rows=rows,
    )
    if cached is not None and not sweep.needs_measuring(cached):
        return cached.latency_table()
    if not measure:
        return None
    if rows in (None, 1):  # side by side, once per pass rather than per row
        logger.info("profiling %s into %s", identity.name, path)
    profile = await asyncio.to_thread(
        functools.partial(
            profile_model,
            source,
            sweep,
            out=path,
            existing=cached,
            topology=topology,
            progress=progress,
            engine_config=engine_config,  # the cache path is keyed by it too
            label=label,
        )
    )
    return profile.latency_table()


async def contender_tables(
    config: ModelConfig,
    contenders: Mapping[Candidate, ModelSource],
    topology: Topology,
    progress: Progress,
    *,
    engine_config: EngineConfig,
    contention: bool,
) -> dict[Candidate, LatencyTable]:
    """Each contender's latency table, as `latency_table` makes it in `CONTENDER_PASSES`
    passes: the cached ones where all are complete (a restart reads each profile once),
    else profiled side by side in `profile_order`, one thread count of each in turn."""
    identities = {c: await asyncio.to_thread(s.identity) for c, s in contenders.items()}
    cached: dict[Candidate, LatencyTable] = {}
    for candidate, source in contenders.items():
        table = await latency_table(
            config, source, identities[candidate], topology, progress,
            engine_config=engine_config, contention=contention, passes=CONTENDER_PASSES,
            measure=False,
        )  # fmt: skip
        if table is not None:
            cached[candidate] = table
    if len(cached) == len(contenders):
        return cached
    order = profile_order(list(contenders), topology.num_cores)
    profiled: dict[Candidate, LatencyTable] = {}
    for number, step in enumerate(order, 1):
        candidate, identity = step.candidate, identities[step.candidate]
        measured = await latency_table(
            config, contenders[candidate], identity, topology, progress,
            engine_config=engine_config, contention=contention, passes=step.passes,
            rows=step.rows, label=f"{identity.name} on {candidate} ({number} of {len(order)})",
        )  # fmt: skip
        assert measured is not None  # neither pinned nor given: profiled
        profiled[candidate] = measured  # the last step's has every row and pass
    return profiled


async def serving_table(
    config: ModelConfig,
    selection: Selection,
    topology: Topology,
    progress: Progress,
    *,
    engine_config: EngineConfig,
    contention: bool,
) -> tuple[Selection, LatencyTable | None]:
    """What to serve and the table (interpolated: every batch size) to plan and split it
    with. With several contenders, and neither a profile given nor a plan pinned, each is
    profiled (cached apart) and the plans choose among them; else the probe choice stands.
    Either way, batches then run in chunks wherever the table says that is faster, unless the
    config turns chunks off."""
    pinned = config.choice is not None and config.choice.pinned
    if needs_plans(selection) and config.profile is None and not pinned:
        profiled = await contender_tables(
            config, selection.contenders, topology, progress,
            engine_config=engine_config, contention=contention,
        )  # fmt: skip
        tables = {c: table.interpolated() for c, table in profiled.items()}
        planned = functools.partial(
            serve_by_plans, selection, tables, topology.num_cores,
            config.batching.max_batch_size,
        )  # fmt: skip
        selection, table = await asyncio.to_thread(planned)  # seconds per table on 128 cores
    else:
        identity = await asyncio.to_thread(selection.source.identity)
        found = await latency_table(
            config, selection.source, identity, topology, progress,
            engine_config=engine_config, contention=contention,
        )  # fmt: skip
        if found is None:
            return selection, None
        table = found.interpolated()  # plan and split every batch size, not only the profiled
    if not config.chunks:
        return selection, table
    return await asyncio.to_thread(with_chunks, selection, table)
