"""Weight sharing: every instance of a model reads the same page-cache copy of its weights.

Without sharing, T instances hold T private copies of the weights. Instead:

1. Before starting workers, the engine makes sure `<weights_dir>/<content_hash>.pt` exists. If
   not, a short-lived spawned helper loads (and initializes) the model once and `torch.save`s
   the handler's `shared_tensors()` there (temp file, fsync, rename: readers never see a
   partial file). The helper is a separate process so the engine never holds the weights.
2. Each worker, after `source.load()` and `initialize()`, maps that file
   (`torch.load(mmap=True)`) and points each of its shared tensors at the mapped tensor of the
   same name, shape and dtype (`Tensor.set_`). Its private copy is freed; all workers then
   read the same file pages.

The mapping is private copy-on-write: a model that writes to its weights gets private pages
back for what it writes, so sharing never changes results, only memory.
"""

from __future__ import annotations

import os
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path

from packrat.errors import ModelError, WorkerError
from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.pool import affinity
from packrat.pool.channel import Channel
from packrat.pool.messages import ExportSpec, FailurePhase, WeightsExported, WorkerFailed
from packrat.pool.process import Died, Undecodable, spawn_child, stop_children, wait_replies

_STOP_TIMEOUT_S = 5.0


def weights_file(identity: ModelIdentity, weights_dir: Path) -> Path:
    """Where the shared weights of the model with `identity` live."""
    return weights_dir / f"{identity.content_hash}.pt"


def ensure_weights_file(source: ModelSource, weights_dir: Path, timeout_s: float) -> Path:
    """The shared weights file for `source`, exporting it first if it does not exist yet.

    Exporting loads the model once in a spawned helper process, which must finish within
    `timeout_s` seconds. Raises ModelError if the model has no identity, WorkerError if the
    directory cannot be created or the helper fails, dies or times out.
    """
    path = weights_file(source.identity(), weights_dir)
    if path.is_file():
        return path
    try:
        weights_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkerError(
            f"cannot create the shared weights directory '{weights_dir}': {exc.strerror}; "
            "set EngineConfig.weights_dir, or share_weights=False"
        ) from exc
    helper = spawn_child(
        run_export, ExportSpec(source, str(path), os.getpid()), label="weights export helper"
    )
    try:
        outcome = wait_replies([helper], timeout_s).get(0)
    finally:
        stop_children([helper], _STOP_TIMEOUT_S)
    if isinstance(outcome, WeightsExported):
        return path
    where = helper.describe()
    if outcome is None:
        raise WorkerError(f"{where} did not finish within {timeout_s:g} s")
    if isinstance(outcome, WorkerFailed):
        raise WorkerError(
            f"{where} failed to {outcome.phase.value}: {outcome.error_type}: {outcome.message}"
        )
    if isinstance(outcome, Died):
        raise WorkerError(f"{where} died with exit code {outcome.exitcode}")
    if isinstance(outcome, Undecodable):
        raise WorkerError(f"{where} sent an undecodable reply: {outcome.message}")
    raise WorkerError(f"{where} sent an unexpected {type(outcome).__name__}")


def run_export(spec: ExportSpec, connection: Connection) -> None:
    """Helper process entry point: load the model, save its shared tensors to `spec.path`."""
    channel = Channel(connection)
    try:
        affinity.die_with_parent(spec.parent_pid)
        affinity.ignore_interrupts()
    except OSError:
        raise SystemExit(1) from None
    phase = FailurePhase.LOAD
    try:
        handler = spec.source.load()
        phase = FailurePhase.INITIALIZE
        handler.initialize()  # as in the worker: some handlers create their weights here
        phase = FailurePhase.EXPORT
        exported = save_shared_tensors(handler, Path(spec.path))
    except Exception as exc:
        channel.send(WorkerFailed(phase, type(exc).__name__, str(exc)))
        raise SystemExit(1) from None
    channel.send(exported)


def save_shared_tensors(handler: Handler, path: Path) -> WeightsExported:
    """Save `handler.shared_tensors()` to `path` atomically (possibly an empty dict)."""
    import torch

    tensors = {name: tensor.detach() for name, tensor in handler.shared_tensors().items()}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(tensors, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    return WeightsExported(tensor_count=len(tensors), total_bytes=total)


def map_shared_weights(handler: Handler, path: str) -> int:
    """Point the handler's shared tensors at the memory-mapped tensors saved in `path`.

    A tensor is swapped only if the file holds one of the same name, shape, dtype and device;
    others keep their private copy. Returns the bytes now read from the mapping. Raises
    ModelError if the file is not a dict of tensors.
    """
    import torch

    targets = handler.shared_tensors()
    if not targets:
        return 0
    try:
        mapped = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, ... for bad files
        raise ModelError(
            f"cannot read the shared weights file '{path}' (delete it to export it again): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(mapped, dict):
        raise ModelError(
            f"shared weights file '{path}' does not hold a dict of tensors "
            "(delete it to export it again)"
        )
    shared_bytes = 0
    for name, tensor in targets.items():
        source = mapped.get(name)
        if not (
            isinstance(source, torch.Tensor)
            and source.shape == tensor.shape
            and source.dtype == tensor.dtype
            and source.device == tensor.device
        ):
            continue
        # Inference tensors may only be modified in inference mode, others only without grad.
        context = torch.inference_mode() if tensor.is_inference() else torch.no_grad()
        with context:
            tensor.set_(source)
        shared_bytes += source.numel() * source.element_size()
    return shared_bytes
