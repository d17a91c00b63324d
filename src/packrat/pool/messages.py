"""Typed messages between the engine and its worker processes.

The engine sends *commands* (`RunBatch`, `Measure`, `Describe`, `Examples`, `Reconfigure`,
`Stop`); a worker answers each
command except `Stop` with exactly one *reply*, in order. A worker also sends one unsolicited
reply when it boots: `Ready`, or `WorkerFailed` before it exits non-zero. `WorkerSpec` is the
boot argument a worker receives at spawn; the weight export helper answers `WeightsExported`.

Every message is a frozen dataclass validated on construction; nothing here imports torch.
Requests and outputs are opaque (whatever the model's handler takes and returns).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from packrat.models.base import ModelSource
from packrat.pool.arena import ArenaPair
from packrat.stats import SamplingPolicy


class FailurePhase(enum.Enum):
    """Where a worker (or the weight export helper) failed before it could serve."""

    PIN = "pin"
    """Setting the parent-death signal, thread environment or CPU affinity."""
    LOAD = "load"
    """Importing torch or `ModelSource.load()`."""
    SHARE_WEIGHTS = "share_weights"
    """Mapping the shared weights file in place of the handler's private weights."""
    INITIALIZE = "initialize"
    """`Handler.initialize()`."""
    EXPORT = "export"
    """Writing the shared weights file (export helper only)."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to boot; pickled once at spawn.

    index: the instance's position in the plan (0-based), used in error messages.
    threads: intra-op threads (OMP/MKL/torch), one per entry of `cores`.
    cores: CPU ids the whole worker process is pinned to.
    source: the model; `load()` runs inside the worker.
    weights_path: the shared weights file to map in place of private weights, or None.
    keep_freed_memory: tune malloc to keep freed memory instead of returning it per batch
        (see `packrat.pool.malloc`).
    parent_pid: the engine's pid; a worker whose parent already changed exits at once.
    visible_cores: the CPUs the worker is pinned to while torch loads (empty: `cores`).
        OpenMP (libgomp) counts them once, at load, and from then on puts its threads to
        sleep almost at once whenever it runs more threads than it counted: a worker booted
        on 1 core and later moved to 2 threads ran ResNet-50 1.5x slower than one booted on
        2. So workers boot seeing every CPU the engine may use, then pin to `cores`.
    arenas: the worker's end of the shared memory its requests and outputs cross
        (`packrat.pool.arena`), or None to send them through the pipe.
    """

    index: int
    threads: int
    cores: tuple[int, ...]
    source: ModelSource
    weights_path: str | None
    parent_pid: int
    keep_freed_memory: bool = True
    visible_cores: tuple[int, ...] = ()
    arenas: ArenaPair | None = None

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"WorkerSpec.index must be >= 0, got {self.index}")
        if self.threads < 1:
            raise ValueError(f"WorkerSpec.threads must be >= 1, got {self.threads}")
        if not self.cores:
            raise ValueError("WorkerSpec.cores must not be empty")
        if min(self.cores) < 0:
            raise ValueError(f"WorkerSpec.cores must be CPU ids >= 0, got {list(self.cores)}")
        if self.parent_pid < 1:
            raise ValueError(f"WorkerSpec.parent_pid must be >= 1, got {self.parent_pid}")


@dataclass(frozen=True)
class ExportSpec:
    """The weight export helper's boot argument: load `source` once, save its shared tensors to
    `path` (atomically), answer `WeightsExported` or `WorkerFailed`."""

    source: ModelSource
    path: str
    parent_pid: int


# --- commands: engine -> worker ---------------------------------------------------------------


@dataclass(frozen=True)
class RunBatch:
    """Run `Handler.handle(requests)`; answered by `BatchDone` or `BatchFailed`.

    Through arenas, the worker's request tensors are views of shared memory that the engine's
    next command overwrites: a handler that keeps a request after `handle` must copy it.
    """

    batch_id: int
    requests: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.batch_id < 0:
            raise ValueError(f"RunBatch.batch_id must be >= 0, got {self.batch_id}")
        if not self.requests:
            raise ValueError("RunBatch.requests must not be empty")


@dataclass(frozen=True)
class Measure:
    """Time `Handler.inference` on `batch_size` example requests until `policy` says stop.

    Answered by `Measured` or `MeasureFailed`.
    """

    batch_size: int
    policy: SamplingPolicy

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"Measure.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class Describe:
    """Ask a worker for its threads and per-thread affinity; answered by `WorkerInfo`."""


@dataclass(frozen=True)
class Stop:
    """Exit with status 0 after the current command; not answered."""


@dataclass(frozen=True)
class Examples:
    """Ask for `batch_size` of the handler's example requests; answered by `ExampleRequests`."""

    batch_size: int

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"Examples.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class Reconfigure:
    """Re-pin the whole worker to `cores` and run `threads` intra-op threads from the next
    batch on (the model stays loaded); answered by `Reconfigured` or `ReconfigureFailed`."""

    threads: int
    cores: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"Reconfigure.threads must be >= 1, got {self.threads}")
        if not self.cores or min(self.cores) < 0:
            raise ValueError(f"Reconfigure.cores must be CPU ids >= 0, got {list(self.cores)}")


Command = RunBatch | Measure | Describe | Examples | Reconfigure | Stop


# --- replies: worker -> engine ----------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The worker booted and serves commands.

    load_s: seconds from the worker's entry to this message (torch import, model load,
        weight mapping, initialize).
    shared_bytes: bytes of weights now read from the shared weights file (0 if not shared).
    """

    pid: int
    threads: int
    cores: tuple[int, ...]
    load_s: float
    shared_bytes: int = 0

    def __post_init__(self) -> None:
        if self.pid < 1:
            raise ValueError(f"Ready.pid must be >= 1, got {self.pid}")
        if self.threads < 1:
            raise ValueError(f"Ready.threads must be >= 1, got {self.threads}")
        if self.load_s < 0:
            raise ValueError(f"Ready.load_s must be >= 0, got {self.load_s}")
        if self.shared_bytes < 0:
            raise ValueError(f"Ready.shared_bytes must be >= 0, got {self.shared_bytes}")


@dataclass(frozen=True)
class WorkerFailed:
    """The worker could not boot; it exits non-zero right after sending this."""

    phase: FailurePhase
    error_type: str
    message: str


@dataclass(frozen=True)
class BatchDone:
    """`RunBatch` succeeded: one output per request, in request order, and the seconds the
    worker spent in `handler.handle` (preprocess + inference + postprocess) for them."""

    batch_id: int
    outputs: tuple[Any, ...]
    compute_s: float = 0.0


@dataclass(frozen=True)
class BatchFailed:
    """`RunBatch` raised; the worker keeps serving. `error_type` is the exception's class name."""

    batch_id: int
    error_type: str
    message: str


@dataclass(frozen=True)
class Measured:
    """`Measure` succeeded: timed inference latencies in milliseconds, in run order."""

    samples_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if any(not math.isfinite(s) or s < 0 for s in self.samples_ms):
            raise ValueError("Measured.samples_ms must be finite and >= 0")


@dataclass(frozen=True)
class MeasureFailed:
    """`Measure` raised; the worker keeps serving."""

    error_type: str
    message: str


@dataclass(frozen=True)
class WorkerInfo:
    """A worker's view of itself, for verifying threads and pinning.

    threads: the threads the model computes with: torch's intra-op threads, or those of the
        handler's runtime (ONNX Runtime, OpenVINO; torch then has one).
    interop_threads: torch.get_num_interop_threads().
    affinity_by_thread: CPU ids each of the process's OS threads (by tid) may run on.
    """

    pid: int
    threads: int
    interop_threads: int
    affinity_by_thread: dict[int, frozenset[int]]


@dataclass(frozen=True)
class WeightsExported:
    """The export helper wrote the shared weights file (possibly with no tensors)."""

    tensor_count: int
    total_bytes: int


@dataclass(frozen=True)
class Reconfigured:
    """`Reconfigure` done: the worker now runs `threads` threads on `cores`."""

    threads: int
    cores: tuple[int, ...]
    took_s: float


@dataclass(frozen=True)
class ReconfigureFailed:
    """`Reconfigure` raised (e.g. a CPU this process may not use); the worker keeps its old
    threads and pinning where it could and keeps serving."""

    error_type: str
    message: str


@dataclass(frozen=True)
class ExampleRequests:
    """`Examples` succeeded: valid requests for the model (deterministic)."""

    requests: tuple[Any, ...]


Reply = (
    Ready
    | WorkerFailed
    | BatchDone
    | BatchFailed
    | Measured
    | MeasureFailed
    | WorkerInfo
    | WeightsExported
    | ExampleRequests
    | Reconfigured
    | ReconfigureFailed
)

COMMAND_TYPES = (RunBatch, Measure, Describe, Examples, Reconfigure, Stop)
REPLY_TYPES = (
    Ready,
    WorkerFailed,
    BatchDone,
    BatchFailed,
    Measured,
    MeasureFailed,
    WorkerInfo,
    WeightsExported,
    Reconfigured,
    ReconfigureFailed,
    ExampleRequests,
)
