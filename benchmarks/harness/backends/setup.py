"""What `packrat serve` would run for a model of benchmarks/backends_side_by_side.py: the
backend it chooses, the profile and the plan per batch size, and the conversions the
single-process systems run; written to the setup file the systems' processes read."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends.children import plan_to_json
from harness.backends.report import ModelRun

if TYPE_CHECKING:
    from packrat.models.base import ModelSource
    from packrat.profiler.profile_file import Profile
    from packrat.progress import Progress
    from packrat.topology import Topology
    from packrat.types import Plan


def prepare_model(
    model: str, batches: list[int], workdir: Path, *, contention: bool = False
) -> ModelRun:
    """Choose the backend, profile and plan as `packrat serve` does (with `--profile-kind
    contention` if `contention`); convert for the single-process systems; write the setup
    file their processes read (WORKDIR/MODEL/setup.json)."""
    from packrat.controller.planning import Planning
    from packrat.models import ZooSource
    from packrat.profiler.backend_plan import (
        needs_plans,
        profile_order,
        serve_by_plans,
        with_chunks,
    )
    from packrat.profiler.backend_select import select_backend
    from packrat.progress import progress_bar
    from packrat.topology import read_topology

    source = ZooSource(model)
    topology = read_topology()
    largest = max(batches)
    with progress_bar() as bar:
        selection = select_backend(source, "auto", "auto", topology, largest, progress=bar)
        # As `packrat serve` does: several contenders are each profiled, and their plans decide.
        by_plans = needs_plans(selection)
        contenders = selection.contenders if by_plans else {selection.candidate: selection.source}
        order = profile_order(list(contenders)) if by_plans else [(selection.candidate, 1)]
        profiles = {
            c: serve_profile(contenders[c], topology, largest, bar, passes, contention)
            for c, passes in order
        }
    profile_path = " and ".join(str(path) for _, path in profiles.values())
    tables = {c: profile.latency_table().interpolated() for c, (profile, _) in profiles.items()}
    if by_plans:
        selection, table = serve_by_plans(selection, tables, topology.num_cores, largest)
    else:
        (table,) = tables.values()
    selection, table = with_chunks(selection, table)
    planning = Planning(topology, table, largest)
    plans = {b: planning.optimal(b) for b in batches}
    folder = workdir / model
    folder.mkdir(parents=True, exist_ok=True)
    setup: dict[str, Any] = {
        "model": model,
        "cores": topology.num_cores,
        "batches": batches,
        "plans": {b: plan_to_json(p) for b, p in plans.items()},
        "pool_size": max(len(p.instances) for p in plans.values()),
        "packrat_source": str(folder / "packrat-source.pkl"),
    }
    (folder / "packrat-source.pkl").write_bytes(pickle.dumps(selection.source))
    unavailable = converted_files(source, setup)
    (folder / "setup.json").write_text(json.dumps(setup, indent=1))
    described = selection.to_json()
    run = ModelRun(
        model=model,
        served=f"{described['backend']} {described['precision']}",
        reason=selection.reason,
        profile=profile_path,
        batches=batches,
        plans={b: described_plan(p, selection.source) for b, p in plans.items()},
        predicted_ms={b: p.latency_ms for b, p in plans.items()},
        unavailable=unavailable,
    )
    print(f"{model}: served on {run.served}; plans from {profile_path}", flush=True)
    return run


def described_plan(plan: Plan, source: ModelSource) -> str:
    """`plan` in the paper's notation; with each instance's chunks and, for a mix of
    backends, each instance's backend."""
    from packrat.models.chunked_source import ChunkedSource
    from packrat.models.mixed_source import MixedSource

    text, chunks = plan.describe(), [i.batch for i in plan.instances]
    if isinstance(source, ChunkedSource):
        sizes = [source.chunks.at(i.threads, i.batch) for i in plan.instances]
        chunks = [size or i.batch for size, i in zip(sizes, plan.instances, strict=True)]
        if any(sizes):
            text += f" in chunks of {', '.join(str(size or '-') for size in sizes)}"
        source = source.source
    if isinstance(source, MixedSource):
        labels = [
            source.labels[source.owners.at(i.threads, size)]
            for i, size in zip(plan.instances, chunks, strict=True)
        ]
        text += f" on {', '.join(label.split()[0] for label in labels)}"
    return text


def serve_profile(
    source: ModelSource,
    topology: Topology,
    largest: int,
    progress: Progress,
    passes: int = 1,
    contention: bool = False,
) -> tuple[Profile, Path]:
    """The profile `packrat serve --max-batch-size LARGEST` plans with (as
    `model_setup.latency_table` makes it; each cell beside copies of itself if `contention`):
    the cached one, completed where it lacks cells or passes."""
    from packrat.profiler.cache import cached_profile, default_profile_path
    from packrat.profiler.sweep import SweepConfig, powers_of_two, profile_model
    from packrat.server.repository import QUICK_POLICY

    path = default_profile_path(source.identity(), topology, contention=contention)
    cached = cached_profile(path)
    sweep = SweepConfig(
        topology.num_cores,
        powers_of_two(largest),
        QUICK_POLICY,
        contention=contention,
        asked=tuple(range(1, largest + 1)),
        passes=passes,
    )
    if cached is not None and not sweep.needs_measuring(cached):
        return cached, path
    profile = profile_model(
        source, sweep, out=path, existing=cached, topology=topology, progress=progress
    )
    return profile, path


def converted_files(source: ModelSource, setup: dict[str, Any]) -> dict[str, str]:
    """Put the fp32 ONNX and OpenVINO conversions' paths into `setup` (cached conversions);
    return the systems that cannot run, with why."""
    from packrat.errors import ModelError
    from packrat.models.backends import Backend, Precision
    from packrat.models.convert import convert_source

    unavailable = {}
    wanted = {"onnx": Backend.ONNXRUNTIME, "openvino_xml": Backend.OPENVINO}
    users = {"onnx": ["ort-default"], "openvino_xml": ["ov-latency", "ov-throughput"]}
    for key, backend in wanted.items():
        try:
            setup[key] = str(convert_source(source, backend, Precision.FP32).path)
        except ModelError as exc:
            unavailable.update({system: f"no {backend.value} conversion: {exc}"
                                for system in users[key]})  # fmt: skip
    return unavailable
