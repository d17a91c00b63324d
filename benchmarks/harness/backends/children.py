"""The processes of benchmarks/backends_side_by_side.py: one per system and model, each with
its own thread pools, and one short-lived process that measures the machine's peak GEMM rate
and the models' FLOPs.

A system's process reads its model's setup (a JSON file the parent wrote), builds the system,
prints one JSON line {"ready": {properties}} (or {"error": message}), then answers each
JSON line {"batch": B, "warmup": W, "runs": R} on stdin with {"ms": [R batch latencies],
"note": text}. It asks the kernel to kill it when the parent dies, and exits at end of input.
Its stdout carries only these lines: anything a library prints goes to stderr (a log file).

Every system gets the same requests: the model's input spec's `example_batch(largest batch,
SEED)`, its first B rows for a batch of B. The single-process systems time the model on that
batch already stacked (a tensor or numpy array); Packrat's `Engine.infer` gets the B requests
as separate tensors, as a server hands them over, so its time includes splitting them among
the instances, their transport and the answers' return.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from packrat.types import InstanceSpec, Plan

SEED = 0


class Runner(Protocol):
    """One system, built in its own process, running batches of its model."""

    properties: dict[str, str]
    """The settings it runs with, for the report: threads, streams, precision."""

    def prepare(self, batch: int) -> str:
        """Get ready to run batches of `batch` (untimed); a note for the report ("" if none)."""
        ...

    def run(self, batch: int) -> None:
        """One batch of `batch` requests (the part timed)."""
        ...

    def close(self) -> None: ...


def plan_to_json(plan: Plan) -> dict[str, Any]:
    instances = [[i.threads, i.batch, list(i.cores)] for i in plan.instances]
    return {"cores": plan.cores, "batch": plan.batch, "latency_ms": plan.latency_ms,
            "instances": instances}  # fmt: skip


def plan_from_json(raw: dict[str, Any]) -> Plan:
    instances = tuple(InstanceSpec(t, b, tuple(c)) for t, b, c in raw["instances"])
    return Plan(raw["cores"], raw["batch"], raw["latency_ms"], instances)


# --- the systems --------------------------------------------------------------------------------


class PackratRunner:
    """Packrat's engine over the source `packrat serve` serves, on the plan for each batch."""

    def __init__(self, setup: dict[str, Any]) -> None:
        from packrat.pool import Engine, EngineConfig

        with open(setup["packrat_source"], "rb") as file:
            source = pickle.load(file)
        self._plans = {int(b): plan_from_json(p) for b, p in setup["plans"].items()}
        largest = max(self._plans)
        self._requests = source.input_spec.example_requests(largest, SEED)
        first = self._plans[min(self._plans)]
        # As the server starts it: workers that cannot move (OpenVINO) get one on each layout
        # of the plans, so that no batch size waits for a worker to start.
        layouts = [layout for plan in self._plans.values() for layout in plan.layout]
        self._engine = Engine(
            source, first, EngineConfig(), pool_size=setup["pool_size"], spares=layouts
        )
        self._engine.start()
        # The choice's precision: the source served may wrap the one that has it (chunks, a
        # mix of backends).
        self.properties = {
            "precision": setup["precision"],
            "workers": str(len(self._engine.pool_pids)),
        }

    def prepare(self, batch: int) -> str:
        plan = self._plans[batch]
        self._engine.reconfigure(plan)  # re-pins in place or takes over a spare: milliseconds
        return str(plan.describe())

    def run(self, batch: int) -> None:
        self._engine.infer(self._requests[:batch])

    def close(self) -> None:
        self._engine.close()


class OpenVinoRunner:
    """OpenVINO's CPU plugin with one performance hint and its defaults otherwise.

    LATENCY: one infer request runs the whole batch. THROUGHPUT: the batch is split evenly
    over the compiled model's optimal number of infer requests (fewer for a smaller batch), all
    started at once through an `AsyncInferQueue`; a batch is done when all of them are."""

    def __init__(self, setup: dict[str, Any], hint: str) -> None:
        import openvino as ov

        from packrat.models.openvino_handler import _make_batch_dynamic

        path = Path(setup["openvino_xml"])
        core = ov.Core()
        model = core.read_model(str(path))
        _make_batch_dynamic(model, path)  # Packrat's conversion has it dynamic already
        self._compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": hint})
        self._batches = numpy_batches(setup)
        self._requests = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._queue = ov.AsyncInferQueue(self._compiled, self._requests)
        self._request = self._compiled.create_infer_request()
        self._parts: list[Any] = []
        self._throughput = hint == "THROUGHPUT"
        self.properties = {
            "precision": precision_name(self._compiled.get_property("INFERENCE_PRECISION_HINT")),
            "streams": str(self._compiled.get_property("NUM_STREAMS")),
            "threads": str(self._compiled.get_property("INFERENCE_NUM_THREADS")),
            "infer requests": str(self._requests if self._throughput else 1),
        }

    def prepare(self, batch: int) -> str:
        if not self._throughput:
            return ""
        import numpy as np

        # Views along the batch dimension of a contiguous array: contiguous, not copied.
        self._parts = np.array_split(self._batches[batch], min(self._requests, batch))
        return f"{len(self._parts)} infer request" + ("s" if len(self._parts) > 1 else "")

    def run(self, batch: int) -> None:
        if not self._throughput:
            self._request.infer({0: self._batches[batch]}, share_inputs=True)
            return
        for part in self._parts:
            self._queue.start_async({0: part}, share_inputs=True)
        self._queue.wait_all()

    def close(self) -> None:
        pass


class OnnxRuntimeRunner:
    """ONNX Runtime's CPU provider with default session options (its own thread count)."""

    def __init__(self, setup: dict[str, Any]) -> None:
        import onnxruntime as ort

        self._session = ort.InferenceSession(
            setup["onnx"], ort.SessionOptions(), providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._batches = numpy_batches(setup)
        threads = self._session.get_session_options().intra_op_num_threads
        self.properties = {
            "precision": "fp32",
            "threads": str(threads or "default (one per physical core)"),
        }

    def prepare(self, batch: int) -> str:
        return ""

    def run(self, batch: int) -> None:
        self._session.run(None, {self._input: self._batches[batch]})

    def close(self) -> None:
        pass


class TorchFatRunner:
    """The zoo model as Packrat's torch backend serves it (traced), one process, every core."""

    def __init__(self, setup: dict[str, Any]) -> None:
        import torch

        from packrat.models import ZooSource

        torch.set_num_threads(setup["cores"])
        self._handler = ZooSource(setup["model"]).load()
        self._handler.initialize()
        spec = ZooSource(setup["model"]).input_spec
        full = spec.example_batch(max(setup["batches"]), SEED)
        self._batches = {b: full[:b].contiguous() for b in setup["batches"]}
        self.properties = {"precision": "fp32", "threads": str(torch.get_num_threads())}

    def prepare(self, batch: int) -> str:
        return ""

    def run(self, batch: int) -> None:
        self._handler.inference(self._batches[batch])

    def close(self) -> None:
        pass


def numpy_batches(setup: dict[str, Any]) -> dict[int, Any]:
    """The model's example batch for each batch size, as contiguous numpy arrays. Torch makes
    them on one thread: its OpenMP pool would otherwise spin beside the runtime's threads."""
    import torch

    from packrat.models import ZooSource

    torch.set_num_threads(1)
    full = ZooSource(setup["model"]).input_spec.example_batch(max(setup["batches"]), SEED)
    return {b: full[:b].contiguous().numpy() for b in setup["batches"]}


def precision_name(value: object) -> str:
    """OpenVINO's inference precision as the report names it: "bf16" or "fp32"."""
    text = str(value).lower()  # a Type, "<Type: 'bfloat16'>", or a string such as "bf16"
    return "bf16" if "bf" in text else "fp32" if "32" in text else text


RUNNERS: dict[str, Callable[[dict[str, Any]], Runner]] = {
    "packrat": PackratRunner,
    "ov-latency": lambda setup: OpenVinoRunner(setup, "LATENCY"),
    "ov-throughput": lambda setup: OpenVinoRunner(setup, "THROUGHPUT"),
    "ort-default": OnnxRuntimeRunner,
    "torch-fat": TorchFatRunner,
}


# --- a system's process -----------------------------------------------------------------------


def run_system(system: str, setup_path: str, parent_pid: int) -> None:
    """The child's side (see the module docstring)."""
    from packrat.pool.affinity import die_with_parent

    die_with_parent(parent_pid)
    replies = protocol_stream()
    setup = json.loads(Path(setup_path).read_text())
    try:
        runner: Runner = RUNNERS[system](setup)
    except Exception as exc:  # any failure to build is reported, not raised into a pipe
        reply(replies, {"error": f"{type(exc).__name__}: {exc}"})
        raise
    reply(replies, {"ready": runner.properties})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            batch = command["batch"]
            note = runner.prepare(batch)
            for _ in range(command["warmup"]):
                runner.run(batch)
            samples = []
            for _ in range(command["runs"]):
                started = time.perf_counter()
                runner.run(batch)
                samples.append((time.perf_counter() - started) * 1000.0)
            reply(replies, {"ms": samples, "note": note})
    finally:
        runner.close()


def protocol_stream() -> IO[str]:
    """This process's stdout for protocol lines alone; fd 1 (print, C libraries) goes to
    stderr from now on."""
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return stream


def reply(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


# --- the machine's peak and the models' FLOPs ---------------------------------------------------


def run_torch_numbers(models: list[str], sizes: list[int], threads: int, parent_pid: int) -> None:
    """Print one JSON line: {"peak": peak_gemm(...), "flops": {model: FLOPs per request}}."""
    from packrat.pool.affinity import die_with_parent

    die_with_parent(parent_pid)
    replies = protocol_stream()
    peak = peak_gemm(sizes, threads)
    flops = {model: flops_per_request(model) for model in models}
    reply(replies, {"peak": peak, "flops": flops})


def peak_gemm(sizes: list[int], threads: int, min_time_s: float = 0.5) -> dict[str, Any]:
    """The machine's GEMM rate in fp32 and bf16: `torch.matmul` of two n x n matrices on
    `threads` threads, for each n of `sizes`, the fastest of at least 3 timed runs (after one
    untimed) or `min_time_s` of them; per precision the best over sizes, in GFLOP/s (2 n^3
    FLOPs per product). bf16 only where the CPU computes it natively: elsewhere no system
    computes in it, and torch's emulation takes minutes for one large product."""
    import torch

    from packrat.topology import runs_bf16_natively

    torch.set_num_threads(threads)
    found: dict[str, Any] = {"threads": threads}
    precisions = [("fp32", torch.float32)]
    if runs_bf16_natively():
        precisions.append(("bf16", torch.bfloat16))
    for name, dtype in precisions:
        best = {"gflops": 0.0, "size": 0}
        for n in sizes:
            generator = torch.Generator().manual_seed(SEED)
            a = torch.randn(n, n, generator=generator).to(dtype)
            b = torch.randn(n, n, generator=generator).to(dtype)
            torch.matmul(a, b)
            fastest, spent, runs = math.inf, 0.0, 0
            while runs < 3 or spent < min_time_s:
                started = time.perf_counter()
                torch.matmul(a, b)
                elapsed = time.perf_counter() - started
                fastest, spent, runs = min(fastest, elapsed), spent + elapsed, runs + 1
            gflops = 2 * n**3 / fastest / 1e9
            if gflops > best["gflops"]:
                best = {"gflops": gflops, "size": n}
        found[name] = best
    return found


def flops_per_request(model: str) -> float:
    """FLOPs of one request through the zoo model's eager torch module (batch 1), as
    `torch.utils.flop_counter` counts them: matrix products and convolutions, 2 per
    multiply-add; elementwise work is not counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from packrat.models import ZooSource

    source = ZooSource(model).eager()
    handler = source.load()
    batch = source.input_spec.example_batch(1, SEED)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        handler.module(batch)
    return float(counter.get_total_flops())
