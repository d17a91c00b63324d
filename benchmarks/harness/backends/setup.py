"""What `packrat serve` would run for a model of benchmarks/backends_side_by_side.py: the
backend it chooses, the profile and the plan per batch size, and the conversions the
single-process systems run; written to the setup file the systems' processes read."""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends.children import plan_to_json
from harness.backends.report import ModelRun

if TYPE_CHECKING:
    from packrat.models.base import ModelSource
    from packrat.types import Plan


def prepare_model(
    model: str, batches: list[int], workdir: Path, *, profile_kind: str = "auto"
) -> ModelRun:
    """Choose the backend, profile and plan as `packrat serve --profile-kind PROFILE_KIND`
    does; convert for the single-process systems; write the setup file their processes read
    (WORKDIR/MODEL/setup.json)."""
    from packrat.controller.batching import BatchingConfig
    from packrat.controller.planning import Planning
    from packrat.models import ZooSource
    from packrat.pool.config import EngineConfig
    from packrat.profiler.backend_select import select_backend
    from packrat.profiler.cache import default_profile_path
    from packrat.profiler.contention import ProfileKindSetting
    from packrat.progress import progress_bar
    from packrat.server.model_config import ModelConfig
    from packrat.server.model_setup import serving_table
    from packrat.topology import read_topology

    source = ZooSource(model)
    topology = read_topology()
    contention = ProfileKindSetting.parse(profile_kind).contention_on(topology.num_cores)
    largest = max(batches)
    config = ModelConfig(model, batching=BatchingConfig(largest))
    with progress_bar() as bar:
        selection = select_backend(source, "auto", "auto", topology, largest, progress=bar)
        # As `packrat serve` does: several contenders are each profiled, and their plans
        # decide; then chunks wherever they are faster.
        chosen = selection.contenders or {selection.candidate: selection.source}
        selection, table = asyncio.run(
            serving_table(
                config, selection, topology, bar, engine_config=EngineConfig(),
                contention=contention,
            )
        )  # fmt: skip
    assert table is not None  # neither pinned nor given: profiled
    profile_path = " and ".join(
        str(default_profile_path(s.identity(), topology, contention=contention))
        for s in chosen.values()
    )
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
    described = selection.to_json()
    setup["precision"] = described["precision"]
    (folder / "setup.json").write_text(json.dumps(setup, indent=1))
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
