"""Convert a torch-served model for ONNX Runtime or OpenVINO, once, into Packrat's cache.

`convert_source(source, backend, precision)` returns a `ConvertedSource` for workers to load.
It runs in the calling process (the parent that starts the workers, or one helper), never in
a worker: conversion loads the torch model and traces it, seconds for the zoo's full-size
models, which a pool of workers must not each repeat.

Where: `<cache>/converted/<name>-<backend>-<precision>-<key16>/`, holding `model.onnx` (ONNX
Runtime) or `model.xml` + `model.bin` (OpenVINO IR), and `packrat.json` (the input spec and the
original model's identity). The key (`conversion_key`) hashes the original model's content
hash, the backend, the precision and the versions of the runtime, of torch (the exporter) and
of this conversion code, so a change to any of them converts again instead of reusing a stale
file.

How: the eager module (zoo) or the loaded TorchScript/.pt2 module is exported with torch's
TorchScript-based ONNX exporter, batch dimension dynamic; OpenVINO reads that ONNX file and
saves it as IR with fp32 weights (bf16 is a compile-time hint, not a file format). The result
is loaded back and must match the torch model in fp32 at several batch sizes
(`accuracy.EXACT_BUDGET`) before it is kept.

Atomic: everything is written into a private staging directory beside the target, then the
directory is renamed into place in one step. Two processes converting at once both finish; the
first rename wins and the other discards its copy, so a reader never sees a half-written model.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from packrat.config import cache_dir
from packrat.errors import ModelError
from packrat.models.backends import (
    Backend,
    Precision,
    check_precision,
    import_runtime,
    library_version,
)
from packrat.models.base import ModelIdentity, ModelSource
from packrat.models.identity import json_sha256
from packrat.models.inputs import InputSpec
from packrat.models.metadata import METADATA_FILE, ExportMetadata
from packrat.models.runtime_source import ConvertedSource
from packrat.models.staging import sync_files

if TYPE_CHECKING:
    import torch

CONVERSION_FORMAT = 1
"""Bump when the conversion itself changes (opset, exporter options): old files are not reused."""

ONNX_OPSET = 17
"""ONNX Runtime and OpenVINO both implement every opset-17 operator, and 17 is the first with a
single LayerNormalization op, which both runtimes fuse into one fast kernel for transformers."""

MODEL_FILES = {Backend.ONNXRUNTIME: "model.onnx", Backend.OPENVINO: "model.xml"}
"""The model file in a conversion directory, per backend."""

EXAMPLE_BATCH_SIZE = 2
"""The exporter traces one example batch; 2 rather than 1, so size-1 special cases (squeezes,
broadcasts) are not baked into the graph (as for the zoo's TorchScript traces)."""


def conversion_key(identity: ModelIdentity, backend: Backend, precision: Precision) -> str:
    """The hex sha256 naming one conversion; also the converted model's content hash."""
    return json_sha256(
        {
            "source": identity.content_hash,
            "backend": backend.value,
            "precision": precision.value,
            "runtime": f"{backend.package}=={library_version(backend.package)}",
            "torch": library_version("torch"),
            "format": CONVERSION_FORMAT,
        }
    )


def conversion_dir(
    identity: ModelIdentity, backend: Backend, precision: Precision, root: Path | None = None
) -> Path:
    """Where the conversion of `identity` for `backend` in `precision` lives.

    root: the directory of all conversions; default `<cache>/converted` (PACKRAT_CACHE_DIR).
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", identity.name)
    key = conversion_key(identity, backend, precision)[:16]
    base = root if root is not None else cache_dir() / "converted"
    return base / f"{name}-{backend.value}-{precision.value}-{key}"


def convert_source(
    source: ModelSource,
    backend: Backend,
    precision: Precision = Precision.FP32,
    *,
    root: Path | None = None,
) -> ConvertedSource:
    """`source` converted for `backend` in `precision`, from the cache or converted now.

    source: a model served by torch's TensorHandler (zoo, TorchScript, .pt2).
    root: the directory of all conversions (default `<cache>/converted`).
    Raises ModelError if the runtime is not installed, the backend cannot run `precision`, the
    model cannot be exported or converted, the converted model does not match the original,
    or the cache cannot be written.
    """
    if backend is Backend.TORCH:
        raise ModelError("torch serves the model as it is; there is nothing to convert")
    check_precision(backend, precision)
    import_runtime(backend)  # fail now, with the install hint, not after a long export
    identity = source.identity()
    target = conversion_dir(identity, backend, precision, root)
    metadata = _cached(target, backend)
    if metadata is None:
        metadata = _convert_into(target, source, backend)
    return ConvertedSource(
        source.name,
        target / MODEL_FILES[backend],
        backend,
        precision,
        metadata.input_spec,
        conversion_key(identity, backend, precision),
    )


def export_onnx(module: torch.nn.Module, spec: InputSpec, path: Path) -> None:
    """Export `module` to an ONNX file at `path`: one input "input" and output "output",
    both with a dynamic batch dimension "batch"; ModelError if the exporter fails."""
    import torch

    from packrat.models.tracing import first_line, quiet_torchscript

    example = spec.example_batch(EXAMPLE_BATCH_SIZE)
    with quiet_torchscript(), warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter is deprecated in favour of the torch.export one, which
        # needs the onnxscript package; this one needs only onnx and exports every zoo model
        # (resnet50, mobilenet-v2 and the tiny ones were checked against torch).
        warnings.simplefilter("ignore", DeprecationWarning)
        # A strided slice (MobileNet's padding) is left unfolded: slower to export, not to run.
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        try:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=ONNX_OPSET,
            )
        except Exception as exc:  # torch raises many types; all mean "not exportable"
            raise ModelError(f"cannot export the model to ONNX: {first_line(exc)}") from exc


def save_openvino_ir(onnx_path: Path, xml_path: Path) -> None:
    """Convert an ONNX file to OpenVINO IR (`xml_path` and the .bin beside it), fp32 weights.

    `compress_to_fp16=False`: OpenVINO would otherwise store fp16 weights, which is a
    precision choice this function must not make.
    """
    from packrat.models.tracing import first_line

    ov = import_runtime(Backend.OPENVINO)
    try:
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
    except Exception as exc:  # openvino raises RuntimeError and its own types
        raise ModelError(f"cannot convert the ONNX model to OpenVINO: {first_line(exc)}") from exc


def _cached(target: Path, backend: Backend) -> ExportMetadata | None:
    """The metadata of a complete conversion at `target`, or None if there is none."""
    record = target / METADATA_FILE
    if not (record.is_file() and (target / MODEL_FILES[backend]).is_file()):
        return None
    metadata = ExportMetadata.from_text(record.read_text(), f"conversion '{target}'")
    if metadata is None:
        raise ModelError(f"conversion '{target}' has an empty {METADATA_FILE}; delete it")
    return metadata


def _convert_into(target: Path, source: ModelSource, backend: Backend) -> ExportMetadata:
    """Convert `source` for `backend`, check it, and move it to `target` atomically."""
    from packrat.models.export import exportable_module

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(
            f"cannot create the conversion cache '{target.parent}': {exc.strerror or exc}; "
            "set PACKRAT_CACHE_DIR"
        ) from exc
    metadata, module = exportable_module(source)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        onnx_path = staging / MODEL_FILES[Backend.ONNXRUNTIME]
        export_onnx(module, metadata.input_spec, onnx_path)
        if backend is Backend.OPENVINO:
            save_openvino_ir(onnx_path, staging / MODEL_FILES[Backend.OPENVINO])
            onnx_path.unlink()
        _check_matches(module, metadata.input_spec, staging / MODEL_FILES[backend], backend)
        (staging / METADATA_FILE).write_text(metadata.to_text())
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata


def _check_matches(module: torch.nn.Module, spec: InputSpec, path: Path, backend: Backend) -> None:
    """ModelError unless the converted file, run in fp32, answers like `module`."""
    from packrat.models.accuracy import EXACT_BUDGET, check_accuracy
    from packrat.models.runtime_source import load_runtime_handler
    from packrat.models.tensor_handler import TensorHandler

    reference = TensorHandler(module, spec)
    # The file itself: it is about to move, so a mapped copy made from it would never be used.
    candidate = load_runtime_handler(path, backend, Precision.FP32, spec, "converted", shared=False)
    report = check_accuracy(reference, candidate)
    report.require(EXACT_BUDGET, f"the {backend.value} conversion")


def _publish(staging: Path, target: Path) -> None:
    """Make `staging` durable, then rename it to `target`; a target that appeared meanwhile
    (another process converting the same model) wins and `staging` is left to be removed."""
    sync_files(staging)
    try:
        os.rename(staging, target)
    except OSError as exc:
        if (target / METADATA_FILE).is_file():
            return  # another process published the same conversion first
        raise ModelError(f"cannot write the conversion '{target}': {exc.strerror or exc}") from exc
