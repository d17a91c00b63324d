"""ONNX Runtime sessions for Packrat's instances, built from a copy whose weights they share.

A session built from an .onnx file reads the weights into its own heap, optimizes the graph and
pre-packs the weights there, so T instances (T processes) hold T copies (measured: 1.8-2.0x one
instance's memory for two). Instead, the first instance to load a model
has ONNX Runtime save what it computes with: the optimized graph, its weights as page-aligned
external data, the pre-packed weights too (`session.save_external_prepacked_constant_initializers`).
Every session is then built from that copy, and ONNX Runtime maps its data file instead of
copying it: the weights are pages of one file, held once however many instances read them.

The copy is specific to this CPU (the optimizer chooses layouts, e.g. NCHWc blocks, and packing
by its instruction sets), to the ONNX Runtime version and to the source file, so `copy_key`
hashes all three. Where: `<cache>/onnxruntime/<name>-<key16>/`, holding `model.onnx`,
`model.onnx.data` and `packrat.json` (what it was made from, for a person reading the cache).

Written once, by a child process of the first instance (so the saving session's heap is not left
in the worker): under a lock file, into a staging directory beside it, flushed to disk and
renamed into place (`staging`); the other instances wait on the lock, then load the copy. Where
it cannot be written (a read-only cache, a full disk, a graph ONNX Runtime cannot save:
remembered beside it, so not tried again), or fails to load, the instance says so in its log and
builds its session from the source file as before: slower to start, more memory, same answers.

Measured on bert-base (one thread, batch 8): the copy is written in 5.6 s (738 MiB: the
weights and their pre-packed form), a session is built from it in 0.25 s instead of 1.46 s
(so re-threading an instance is that much cheaper), and its outputs are identical to the
source's, at the same latency (medians of five interleaved batches: 2490 ms, 2546 from the
source).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from packrat.config import cache_dir
from packrat.errors import ModelError
from packrat.models.backends import Backend, import_runtime, library_version
from packrat.models.identity import json_sha256
from packrat.models.staging import sync_files
from packrat.models.tracing import first_line
from packrat.topology import cpu_flags

logger = logging.getLogger(__name__)

COPY_FORMAT = 1
"""Bump when what the copy holds changes (the options it is saved with): old copies are not
reused."""

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
INFO_FILE = "packrat.json"
FAILED_SUFFIX = ".failed"
"""Beside a copy's folder: ONNX Runtime could not save that model (the reason inside), so no
instance tries again (each try is a whole optimization in a child process); a new ONNX Runtime
or a changed file is a new key, and tries again."""

MIN_EXTERNAL_BYTES = 1024
"""Initializers at least this large go to the mapped data file; smaller ones (shapes, scalars)
stay inside the graph, where a page each would waste more than they share."""

_ERRORS_ONLY = 3  # ONNX Runtime's log severity: 0 verbose ... 3 error, 4 fatal

_SAVING = {
    "session.optimized_model_external_initializers_file_name": DATA_FILE,
    "session.optimized_model_external_initializers_min_size_in_bytes": str(MIN_EXTERNAL_BYTES),
    "session.save_external_prepacked_constant_initializers": "1",
}
"""Session config entries that save the weights, pre-packed ones included, as mapped data."""


def build_session(
    model: Path, threads: int, *, name: str | None = None, copies: Path | None = None
) -> Any:
    """A CPU session for `model` on exactly `threads` intra-op threads, built from its mapped
    copy (written first if this is the first instance) unless that cannot be had.

    name: the served model's name, which names its copy's folder (default: the file's stem).
    copies: where copies are kept; default `<cache>/onnxruntime`.
    Raises ModelError if the model itself cannot be loaded.
    """
    copy = mapped_copy(model, threads, copies, name=name)
    if copy is not None:
        try:
            return open_session(copy, threads, optimized=True)
        except ModelError as exc:
            logger.warning(
                "%s: ONNX Runtime cannot load its optimized copy %s (%s); this instance loads "
                "the model itself, with weights of its own", model, copy, exc,
            )  # fmt: skip
    return open_session(model, threads, optimized=False)


def open_session(path: Path, threads: int, *, optimized: bool, save_to: Path | None = None) -> Any:
    """An ONNX Runtime CPU session on `path`, with Packrat's instance options.

    optimized: `path` is an optimized copy, so the graph is not optimized again (its layout
        transforms are already in it); else every optimization level runs.
    save_to: a folder to save the optimized copy into (`MODEL_FILE`, weights in `DATA_FILE`).

    Options, and why:
    - `intra_op_num_threads = threads`: exactly the instance's cores. An explicit count also
      turns off ONNX Runtime's own thread pinning, which would fight Packrat's.
    - `inter_op_num_threads = 1` and sequential execution: an instance runs one batch at a time,
      and operators run one after another; parallel branches would only compete for the same
      cores.
    - spinning allowed (`session.intra_op.allow_spinning = 1`, ONNX Runtime's default, set
      explicitly): between operators the pool threads spin instead of sleeping, which saves a
      futex wake-up per operator. Packrat pins each worker to cores no other instance uses, so
      the spinning burns only this instance's own cores, which would otherwise idle.
    - spinning stops when a run returns (`session.force_spinning_stop = 1`): between batches
      the server's process shares the cores with the instances (its event loop and the pipe
      to the worker that just answered), and threads spinning on with nothing to do would
      delay exactly the work that answers the request.
    """
    ort = import_runtime(Backend.ONNXRUNTIME)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    levels = ort.GraphOptimizationLevel
    options.graph_optimization_level = (
        levels.ORT_DISABLE_ALL if optimized else levels.ORT_ENABLE_ALL
    )
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if save_to is not None:
        options.optimized_model_filepath = str(save_to / MODEL_FILE)
        for key, value in _SAVING.items():
            options.add_session_config_entry(key, value)
    options.log_severity_level = _ERRORS_ONLY
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelError(f"cannot load ONNX model '{path}': {first_line(exc)}") from exc


def copy_key(model: Path) -> str:
    """The hex sha256 naming `model`'s copy: the file (its real path, size and modification
    time, so a rewritten file gets a new copy without hashing gigabytes in every worker), this
    CPU's instruction sets, the ONNX Runtime version and `COPY_FORMAT`.

    Raises OSError if the file cannot be read.
    """
    stat = model.stat()
    return json_sha256(
        {
            "source": [str(model.resolve()), stat.st_size, stat.st_mtime_ns],
            "cpu": [platform.machine(), sorted(cpu_flags())],
            "onnxruntime": library_version("onnxruntime"),
            "format": COPY_FORMAT,
        }
    )


def mapped_copy(
    model: Path, threads: int, copies: Path | None = None, *, name: str | None = None
) -> Path | None:
    """The optimized copy of `model` for this CPU and ONNX Runtime, written on the first call
    (on `threads` threads) and found by the next; None, with a warning, if it cannot be.
    `name` names its folder, with the key (default: the file's stem)."""
    root = copies if copies is not None else cache_dir() / "onnxruntime"
    try:
        folder = root / f"{name or model.stem}-{copy_key(model)[:16]}"
        failed = folder.with_name(folder.name + FAILED_SUFFIX)
        if failed.exists():  # this ONNX Runtime cannot save this model: not tried again
            logger.info("%s: no optimized copy (%s)", model, failed.read_text().strip())
            return None
        if not (folder / MODEL_FILE).exists():
            root.mkdir(parents=True, exist_ok=True)
            with _locked(root / f"{folder.name}.lock"):
                if not (folder / MODEL_FILE).exists() and not failed.exists():
                    try:
                        _write(model, folder, threads)
                    except ModelError as exc:
                        failed.write_text(f"{exc}\n")
                        raise
            if failed.exists():  # another instance failed while we waited
                return None
    except (OSError, ModelError) as exc:
        logger.warning(
            "%s: cannot keep ONNX Runtime's optimized copy in %s (%s); this instance loads "
            "the model itself, with weights of its own", model, root, exc,
        )  # fmt: skip
        return None
    return folder / MODEL_FILE


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing); the OS drops it if we die."""
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(model: Path, folder: Path, threads: int) -> None:
    """Have ONNX Runtime save `model` optimized, weights external, into a staging directory,
    then rename it to `folder`. Raises ModelError or OSError, leaving nothing behind.

    The saving session runs in a child process (this module's `main`): in the worker, its
    heap (a whole copy of the weights, freed once saved) would stay with the worker, which
    keeps freed memory (`pool.malloc`), and undo what the copy saves."""
    logger.info(
        "%s: writing ONNX Runtime's optimized copy (once per CPU and ONNX Runtime version)",
        model,
    )
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        saved = subprocess.run(
            [sys.executable, "-m", __name__, str(model), str(staging), str(threads)],
            capture_output=True,
            text=True,
            check=False,
        )
        if saved.returncode != 0:
            lines = saved.stderr.strip().splitlines() or [f"exit status {saved.returncode}"]
            raise ModelError(f"saving it failed: {lines[-1]}")
        if not (staging / DATA_FILE).exists():  # nothing large enough to map: no gain
            raise ModelError("the optimized graph has no weights to map")
        info = {"source": str(model.resolve()), "onnxruntime": library_version("onnxruntime")}
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        sync_files(staging)  # every worker computes with these bytes: durable before visible
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = (folder / DATA_FILE).stat().st_size
    logger.info(
        "%s: ONNX Runtime's optimized copy written to %s (%.0f MiB of weights, %.1f s); "
        "instances map its weights instead of each holding its own",
        model, folder, size / 2**20, time.perf_counter() - started,
    )  # fmt: skip


def main(argv: list[str]) -> None:
    """`python -m packrat.models.onnxruntime_session MODEL FOLDER THREADS`: save MODEL's
    optimized copy into FOLDER (which exists), on THREADS threads. For `_write`."""
    model, folder, threads = argv
    open_session(Path(model), int(threads), optimized=False, save_to=Path(folder))


if __name__ == "__main__":
    main(sys.argv[1:])
