"""Write a model as a TorchScript file or a `torch.export` program (`packrat export`).

Both files embed a `packrat.json` record (see `metadata`) with the input spec and the identity
of the model they came from, so they can be profiled and served without further flags. Only
models served by `TensorHandler` (the zoo, TorchScript and .pt2 files) can be exported; a
handler file's model is whatever its Python code makes it.

Each export is checked before it is kept: the written file is loaded back and must match the
original model at batch sizes other than the one it was traced at, because a graph that baked
in the example's batch size would otherwise fail, or silently differ, only when served.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from packrat.errors import ModelError
from packrat.models.base import ModelSource
from packrat.models.exported import ExportedSource
from packrat.models.metadata import METADATA_FILE, ExportMetadata
from packrat.models.resolve import PROGRAM_SUFFIXES, TORCHSCRIPT_SUFFIXES
from packrat.models.torchscript import TorchScriptSource
from packrat.models.zoo import ZooSource

if TYPE_CHECKING:
    import torch

    from packrat.models.inputs import InputSpec


def export_torchscript(
    source: ModelSource, path: str | os.PathLike[str], batch_size: int = 2
) -> Path:
    """Trace `source`'s model on `batch_size` example requests and save it to `path`.

    `path` must end in .pt, .ts or .torchscript. Returns the absolute path written. Raises
    ModelError if the model cannot be exported, traced or saved, or if the trace does not
    reproduce the model at other batch sizes.
    """
    import torch

    from packrat.models.tracing import quiet_torchscript, trace_module

    target = _target(path, TORCHSCRIPT_SUFFIXES, "a TorchScript file")
    if batch_size < 1:
        raise ModelError(f"batch_size must be >= 1, got {batch_size}")
    metadata, module = exportable_module(source)
    if isinstance(module, torch.jit.ScriptModule):
        graph = module  # already TorchScript: re-save it with our metadata
    else:
        graph = trace_module(module, metadata.input_spec.example_batch(batch_size))

    def save(tmp: Path) -> None:
        with quiet_torchscript():
            torch.jit.save(graph, str(tmp), _extra_files={METADATA_FILE: metadata.to_text()})

    _write_checked(target, save, TorchScriptSource, module, metadata.input_spec, batch_size)
    return target


def export_program(source: ModelSource, path: str | os.PathLike[str], batch_size: int = 2) -> Path:
    """Export `source`'s model with `torch.export` and a dynamic batch dimension to `path`.

    `path` must end in .pt2; `batch_size` (>= 2: torch.export fixes a dimension whose example
    size is 1) is the example batch. Returns the absolute path written. Raises ModelError if
    the model cannot be exported or saved, or if the program does not reproduce the model at
    other batch sizes.
    """
    import torch

    from packrat.models.tracing import MIN_EXPORT_BATCH, export_module

    target = _target(path, PROGRAM_SUFFIXES, "an exported program")
    if batch_size < MIN_EXPORT_BATCH:
        raise ModelError(f"export_program needs batch_size >= {MIN_EXPORT_BATCH}, got {batch_size}")
    metadata, module = exportable_module(source)
    if isinstance(module, torch.jit.ScriptModule):
        raise ModelError(
            f"model '{source.name}' is TorchScript, which torch.export cannot read; "
            "export the original eager model instead"
        )
    program = export_module(module, metadata.input_spec.example_batch(batch_size))

    def save(tmp: Path) -> None:
        torch.export.save(program, tmp, extra_files={METADATA_FILE: metadata.to_text()})

    _write_checked(target, save, ExportedSource, module, metadata.input_spec, batch_size)
    return target


def _target(path: str | os.PathLike[str], suffixes: tuple[str, ...], what: str) -> Path:
    # The resolver picks a file's format by its suffix, so any other name could not be served.
    target = Path(path).expanduser().absolute()
    if target.suffix.lower() not in suffixes:
        raise ModelError(f"'{target}' must end in {' or '.join(suffixes)} to be {what}")
    if not target.parent.is_dir():
        raise ModelError(f"cannot write '{target}': directory '{target.parent}' does not exist")
    return target


def exportable_module(source: ModelSource) -> tuple[ExportMetadata, torch.nn.Module]:
    """The metadata to store and the module to export, in eager form where there is one.

    Zoo models come back eager (not traced); TorchScript and .pt2 files as loaded. Raises
    ModelError for models not served by `TensorHandler` or without an input spec.
    """
    from packrat.models.tensor_handler import TensorHandler

    identity = source.identity()
    loadable = source.eager() if isinstance(source, ZooSource) else source
    handler = loadable.load()
    handler.initialize()  # the Handler lifecycle, as a worker runs it
    if not isinstance(handler, TensorHandler):
        raise ModelError(
            f"model '{source.name}' cannot be exported: only tensor models (zoo, TorchScript, "
            ".pt2) can; a handler file's model is defined by its code"
        )
    if handler.input_spec is None:
        raise ModelError(
            f"model '{source.name}' has no input spec; pass --input-shape and --input-dtype"
        )
    return ExportMetadata(handler.input_spec, identity), handler.module


def _write_checked(
    target: Path,
    save: Callable[[Path], None],
    reader: Callable[[Path], ModelSource],
    reference: torch.nn.Module,
    spec: InputSpec,
    batch_size: int,
) -> None:
    """Save via a temporary file, read it back with `reader`, compare with `reference`, keep it.

    The temporary file keeps the target's suffix (torch.export insists on .pt2) and lives in
    the same directory, so the final rename is atomic and never leaves a half-written model.
    """
    from packrat.models.tensor_handler import TensorHandler
    from packrat.models.tracing import check_batch_independent, first_line

    tmp = target.with_name(f".{target.stem}.partial{target.suffix}")
    try:
        try:
            save(tmp)
        except Exception as exc:  # torch raises many types; all mean "could not write"
            raise ModelError(f"cannot write '{target}': {first_line(exc)}") from exc
        loaded = reader(tmp).load()
        assert isinstance(loaded, TensorHandler)  # both file formats load as TensorHandler
        # Batch 1 and one larger than the example: a graph that fixed the example's batch
        # size fails or differs on at least one of them.
        checks = [spec.example_batch(1, seed=1), spec.example_batch(batch_size + 3, seed=2)]
        check_batch_independent(reference, loaded.module, checks)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
