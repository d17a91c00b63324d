"""The worker process: boot one pinned instance of a model, then serve commands until Stop.

Boot order matters. The worker pins itself and sizes the OpenMP/MKL pools through the
environment *before* importing torch, so those pools are created with the right size on the
right cores; it pins again after `initialize()` to catch threads created meanwhile.

`run_worker` is the process entry point; `handle_command` and `measure_inference` are the
per-command logic, usable in-process with any `Handler` (tests drive them without a process).
This module must not import torch at import time: spawn imports it before `run_worker` runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from packrat.models.base import Handler
from packrat.pool import affinity, malloc
from packrat.pool.channel import Channel
from packrat.pool.messages import (
    BatchDone,
    BatchFailed,
    Describe,
    ExampleRequests,
    Examples,
    FailurePhase,
    Measure,
    Measured,
    MeasureFailed,
    Ready,
    Reconfigure,
    Reconfigured,
    ReconfigureFailed,
    Reply,
    RunBatch,
    Stop,
    WorkerFailed,
    WorkerInfo,
    WorkerSpec,
)
from packrat.pool.weights import map_shared_weights
from packrat.stats import SamplingPolicy, should_stop

logger = logging.getLogger(__name__)


class BootError(Exception):
    """A boot step failed; carries the phase for `WorkerFailed`."""

    def __init__(self, phase: FailurePhase, cause: BaseException) -> None:
        super().__init__(f"{phase.value}: {type(cause).__name__}: {cause}")
        self.phase = phase
        self.cause = cause


def run_worker(spec: WorkerSpec, connection: Connection) -> None:
    """Process entry point: boot, send `Ready` (or `WorkerFailed` and exit 1), serve, exit 0."""
    started = time.perf_counter()
    channel = Channel(connection, spec.arenas)
    try:
        handler, shared_bytes = boot(spec)
    except affinity.ParentGoneError:
        raise SystemExit(1) from None  # the engine died while we started; nobody is listening
    except BootError as exc:
        logger.error("instance %d failed to boot: %s", spec.index, exc, exc_info=exc.cause)
        failure = WorkerFailed(exc.phase, type(exc.cause).__name__, str(exc.cause))
        with contextlib.suppress(OSError):
            channel.send(failure)
        raise SystemExit(1) from None
    ready = Ready(
        pid=os.getpid(),
        threads=spec.threads,
        cores=spec.cores,
        load_s=time.perf_counter() - started,
        shared_bytes=shared_bytes,
    )
    channel.send(ready)
    serve(handler, channel, functools.partial(describe_self, handler), retune_self)


def boot(spec: WorkerSpec) -> tuple[Handler, int]:
    """Watch the parent, pin to the visible cores, import torch, pin to the worker's cores,
    load the model, initialize, map shared weights, pin again.

    Returns the handler and the bytes of weights now shared. Raises ParentGoneError if the
    engine already died, else BootError naming the phase that failed.
    """
    phase = FailurePhase.PIN
    try:
        affinity.die_with_parent(spec.parent_pid)
        affinity.ignore_interrupts()
        affinity.set_thread_env(spec.threads)
        affinity.pin_process(spec.visible_cores or spec.cores)
        phase = FailurePhase.LOAD
        configure_torch_threads(spec.threads)  # loads OpenMP, which counts the CPUs it sees
        phase = FailurePhase.PIN
        affinity.pin_process(spec.cores)
        phase = FailurePhase.LOAD
        handler = spec.source.load()
        configure_torch_threads(torch_threads(handler, spec.threads))
        phase = FailurePhase.INITIALIZE
        handler.initialize()
        # After initialize: handlers in the TorchServe style create their weights there.
        phase = FailurePhase.SHARE_WEIGHTS
        shared_bytes = 0
        if spec.weights_path is not None:
            shared_bytes = map_shared_weights(handler, spec.weights_path)
        # Only now: the private weights freed by the mapping above go back to the OS, which
        # they would not once malloc keeps freed memory.
        if spec.keep_freed_memory:
            malloc.keep_freed_memory()
        phase = FailurePhase.PIN
        affinity.pin_process(spec.cores)
    except affinity.ParentGoneError:
        raise
    except Exception as exc:
        raise BootError(phase, exc) from exc
    return handler, shared_bytes


def retune_self(handler: Handler, threads: int, cores: tuple[int, ...]) -> None:
    """Pin every thread of this process to `cores` and use `threads` intra-op threads from the
    next parallel region on. OpenMP threads created later inherit the main thread's pinning;
    surplus ones sleep.

    Then `handler.set_threads(threads)`, after pinning, so a runtime that rebuilds its thread
    pool there (ONNX Runtime) creates the new threads on the new cores; and pin again after
    it, in case threads leaving the old pool restored the mask they had before.
    """
    affinity.pin_process(cores)
    import torch

    torch.set_num_threads(torch_threads(handler, threads))
    handler.set_threads(threads)
    affinity.pin_process(cores)


def torch_threads(handler: Handler, threads: int) -> int:
    """torch's intra-op threads for an instance of `threads` threads: all of them if the model
    computes with torch, else 1 (see `Handler.computes_with_torch`)."""
    return threads if handler.computes_with_torch else 1


def configure_torch_threads(threads: int) -> None:
    """Import torch and set its intra-op threads to `threads` and inter-op threads to 1 (once:
    torch refuses a second setting of inter-op threads, which stays 1).

    One inter-op thread: an instance runs one batch at a time, and extra inter-op threads would
    only compete with the intra-op threads for the instance's cores.
    """
    import torch

    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        torch.set_num_interop_threads(1)


def describe_self(handler: Handler) -> WorkerInfo:
    """This process's compute threads (torch's, or the handler's runtime's: see
    `Handler.computes_with_torch`), inter-op threads, and the affinity of each OS thread."""
    import torch

    threads = torch.get_num_threads()
    if not handler.computes_with_torch:
        threads = getattr(handler, "threads", threads)
    return WorkerInfo(
        pid=os.getpid(),
        threads=threads,
        interop_threads=torch.get_num_interop_threads(),
        affinity_by_thread=affinity.current_affinity_of_all_threads(),
    )


Retune = Callable[[Handler, int, tuple[int, ...]], None]
"""Set (threads, cores) of the running worker and its handler: `retune_self` in a worker."""


def serve(
    handler: Handler,
    channel: Channel,
    describe: Callable[[], WorkerInfo],
    retune: Retune = retune_self,
) -> None:
    """Answer commands until `Stop` or until the engine's end of the pipe closes."""
    while True:
        try:
            command = channel.recv_command()
        except EOFError:
            return  # the engine is gone; nobody will read our replies
        if isinstance(command, Stop):
            return
        send_reply(channel, handle_command(handler, command, describe, retune))


def handle_command(
    handler: Handler,
    command: RunBatch | Measure | Describe | Examples | Reconfigure,
    describe: Callable[[], WorkerInfo],
    retune: Retune = retune_self,
) -> Reply:
    """The reply to one command. A handler exception becomes a failure reply, never a crash."""
    if isinstance(command, Reconfigure):
        started = time.perf_counter()
        try:
            retune(handler, command.threads, command.cores)
        except Exception as exc:
            logger.warning("reconfiguration failed", exc_info=True)
            return ReconfigureFailed(type(exc).__name__, str(exc))
        took_s = time.perf_counter() - started
        return Reconfigured(command.threads, command.cores, took_s)
    if isinstance(command, RunBatch):
        started = time.perf_counter()
        try:
            outputs = handler.handle(list(command.requests))
        except Exception as exc:
            logger.warning("batch %d failed", command.batch_id, exc_info=True)
            return BatchFailed(command.batch_id, type(exc).__name__, str(exc))
        return BatchDone(command.batch_id, tuple(outputs), time.perf_counter() - started)
    if isinstance(command, Measure):
        try:
            samples = measure_inference(handler, command.batch_size, command.policy)
        except Exception as exc:
            logger.warning("measurement failed", exc_info=True)
            return MeasureFailed(type(exc).__name__, str(exc))
        return Measured(tuple(samples))
    if isinstance(command, Examples):
        try:
            requests = handler.example_requests(command.batch_size)
        except Exception as exc:
            logger.warning("example requests failed", exc_info=True)
            return MeasureFailed(type(exc).__name__, str(exc))
        return ExampleRequests(tuple(requests))
    return describe()


def send_reply(channel: Channel, reply: Reply) -> None:
    """Send `reply`; if a handler's outputs cannot be pickled, send `BatchFailed` instead.

    Nothing is written before pickling succeeds, so the fallback keeps the pipe in step.
    """
    try:
        channel.send(reply)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        if not isinstance(reply, BatchDone):
            raise
        message = f"outputs cannot be pickled: {type(exc).__name__}: {exc}"
        channel.send(BatchFailed(reply.batch_id, type(exc).__name__, message))


def measure_inference(
    handler: Handler,
    batch_size: int,
    policy: SamplingPolicy,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Timed `handler.inference` latencies (ms) on `batch_size` example requests.

    Preprocessing happens once, outside the timing; `policy.warmup_runs` untimed runs come
    first; timed runs continue until `should_stop(samples, elapsed_s, policy)`. `clock` returns
    seconds.
    """
    batch = handler.preprocess(handler.example_requests(batch_size))
    for _ in range(policy.warmup_runs):
        handler.inference(batch)
    samples: list[float] = []
    started = clock()
    while True:
        before = clock()
        handler.inference(batch)
        after = clock()
        samples.append((after - before) * 1000.0)
        if should_stop(samples, after - started, policy):
            return samples
