"""Memory of T instances against one, per backend: do instances share their weights?

    python benchmarks/backend_memory.py [--models resnet50 bert-base gpt2]
        [--backends torch onnxruntime openvino [onnxruntime+openvino]]
        [--output docs/benchmarks/backend-memory.md]
        [--workdir DIR]

(with the project's venv active, from the repository root; HF_HUB_OFFLINE=1).

Issue 15: "T instances of one model on one backend use at most 1.5x one instance's memory, or
the report says why not." For each model and backend (the backend's default precision here:
bf16 for OpenVINO on a CPU with native bf16, else fp32), two engines one after the other, each
with the pool's defaults (shared weights on): the fat plan, one instance of T threads, and T
instances of one thread, every usable core. Each serves a few batches of 1 and of 8 (so
activations and the runtimes' caches are in memory as when serving), then the workers' memory
is read from /proc (`Engine.memory`: PSS, which counts a page shared by k processes 1/k in
each, so the sum is what the workers use together; anonymous and file-backed parts apart).
The engine process itself (the server's side) is not counted: it is the same for both.
A mix of backends (`onnxruntime+openvino`, as `--backend auto` may serve) holds each in
every worker; its batches of 1 run on the first, larger ones on the second.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report import cpu_model, kept_analysis, package_versions

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
BATCHES = (1, 8, 1)


@dataclass(frozen=True)
class Usage:
    """One engine's workers: PSS in all, its anonymous and file-backed parts, and the bytes
    of weights shared through the pool's mapped file (0 where the backend keeps its own)."""

    instances: int
    pss: int
    pss_anon: int
    pss_file: int
    shared_weights: int


def measure(model: str, backend: str, instances: int) -> Usage:
    from packrat.pool import Engine
    from packrat.types import InstanceSpec, Plan

    cpus = tuple(sorted(os.sched_getaffinity(0)))
    source = _source(model, backend, len(cpus))
    if instances == 1:
        specs = (InstanceSpec(len(cpus), 1, cpus),)
    else:
        specs = tuple(InstanceSpec(1, 1, (cpu,)) for cpu in cpus[:instances])
    plan = Plan(cores=len(cpus), batch=len(specs), latency_ms=0.0, instances=specs)
    with Engine(source, plan) as engine:
        for batch in BATCHES:
            requests = engine.example_requests(batch)
            for size in _sizes(batch, len(specs)):
                engine.run_split(requests, size)
        report = engine.memory()
        shared = max(ready.shared_bytes for ready in engine.ready)
    return Usage(len(specs), report.pss_bytes, report.pss_anon_bytes, report.pss_file_bytes,
                 shared)  # fmt: skip


def _source(model: str, backend: str, cpus: int) -> Any:
    """The model on `backend` (its default precision here), or on a mix of backends
    ("onnxruntime+openvino": every worker holds each, batches of 1 run on the first and larger
    ones on the second, so both have run when the memory is read)."""
    from packrat.models import ZooSource
    from packrat.models.backends import Backend, Precision
    from packrat.models.convert import convert_source
    from packrat.models.mixed_source import MixedSource
    from packrat.topology import runs_bf16_natively
    from packrat.types import CellMap

    if backend == Backend.TORCH.value:
        return ZooSource(model)
    names = backend.split("+")
    sources = []
    for name in names:
        precision = Precision.FP32
        if name == Backend.OPENVINO.value and runs_bf16_natively():
            precision = Precision.BF16
        sources.append(convert_source(ZooSource(model), Backend(name), precision))
    if len(sources) == 1:
        return sources[0]
    owners = {(t, b): 0 if b == 1 else 1 for t in range(1, cpus + 1) for b in range(1, 9)}
    return MixedSource(sources, names, CellMap.from_cells(owners))


def _sizes(batch: int, instances: int) -> list[list[int]]:
    """The batch split evenly over the instances (as the plan would)."""
    base, extra = divmod(batch, instances)
    return [[base + (1 if k < extra else 0) for k in range(instances)]]


def render(rows: list[tuple[str, str, Usage, Usage]], command: str) -> str:
    versions = ", ".join(
        f"{k} {v}" for k, v in package_versions(("onnxruntime", "openvino")).items()
    )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cores = len(os.sched_getaffinity(0))
    lines = [
        "# Memory of T instances against one, per backend (issue 15)",
        "",
        f"Measured {now} on {platform.node()}: {cpu_model()}, {cores} usable cores, Linux "
        f"{platform.release()}; {versions}.",
        "",
        f"Command: `{command}`",
        "",
        (__doc__ or "")[(__doc__ or "").index("For each model") :].strip(),
        "",
        f"| model | backend | 1 instance PSS (MiB) | {cores} instances PSS (MiB) | ratio | "
        "of which anonymous, 1 / T (MiB) | file-backed, 1 / T (MiB) | "
        "torch weights shared by the pool (MiB) | within 1.5x? |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for model, backend, one, many in rows:
        ratio = many.pss / one.pss
        lines.append(
            f"| {model} | {backend} | {one.pss / MiB:.0f} | {many.pss / MiB:.0f} | "
            f"{ratio:.2f}x | {one.pss_anon / MiB:.0f} / {many.pss_anon / MiB:.0f} | "
            f"{one.pss_file / MiB:.0f} / {many.pss_file / MiB:.0f} | "
            f"{many.shared_weights / MiB:.0f} | {'yes' if ratio <= 1.5 else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "bert-base", "gpt2"])
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "openvino"])
    parser.add_argument("--output", type=Path, default=REPO / "docs/benchmarks/backend-memory.md")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="backend-memory-"))
    os.environ.setdefault("PACKRAT_CACHE_DIR", str(workdir / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cores = len(os.sched_getaffinity(0))
    rows = []
    for model in args.models:
        for backend in args.backends:
            one, many = measure(model, backend, 1), measure(model, backend, cores)
            print(
                f"{model} {backend}: 1 instance {one.pss / MiB:.0f} MiB, {cores} instances "
                f"{many.pss / MiB:.0f} MiB ({many.pss / one.pss:.2f}x)",
                flush=True,
            )
            rows.append((model, backend, one, many))
    command = "python benchmarks/backend_memory.py " + " ".join(sys.argv[1:])
    text = render(rows, command.strip())
    print(text)
    args.output.write_text(text + kept_analysis(args.output))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
