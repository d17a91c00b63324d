"""Serve an OpenVINO model (IR .xml, or .onnx) with the CPU plugin, on exactly t threads.

Requests and outputs stay torch tensors: the batch goes to OpenVINO as a numpy view of the
stacked tensor (`share_inputs`), and the output comes back as a tensor over the infer request's
own output buffer, neither copied. Importing this module imports torch, not openvino: the
runtime is imported when a handler is built (inside a worker or a conversion).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from packrat.errors import ModelError
from packrat.models.backends import Backend, Precision, check_precision, import_runtime
from packrat.models.inputs import InputSpec, declared_spec
from packrat.models.tensor_handler import BatchTensorHandler, check_one_input, check_threads
from packrat.models.tracing import first_line

logger = logging.getLogger(__name__)


class OpenVinoHandler(BatchTensorHandler):
    """Runs a one-input, batch-first OpenVINO model on `threads` threads in `precision`.

    path: an OpenVINO IR .xml (its .bin beside it) or an .onnx file. A model whose batch
        dimension is fixed is reshaped to a dynamic one, so one compiled model serves every
        batch size a plan may give the instance.
    threads: inference threads; the model is compiled at once, on the cores the calling thread
        is pinned to.
    precision: FP32 or BF16 (`INFERENCE_PRECISION_HINT`); set explicitly because OpenVINO
        defaults to bf16 on CPUs that have it, and fp32 must mean fp32.
    input_spec: the per-request input; None takes the one the model declares, if it fixes
        every dimension after the batch.

    Compile properties, and why:
    - `INFERENCE_NUM_THREADS = threads`, `NUM_STREAMS = 1`, `PERFORMANCE_HINT = LATENCY`: one
      stream of `threads` threads, one batch at a time, as Packrat's plan sized the instance.
    - `ENABLE_CPU_PINNING = True`, against first intuition (Packrat pins the worker itself).
      Measured with OpenVINO 2026.4: with pinning off, OpenVINO's TBB arenas bind every thread
      that runs an inference to the CPUs the process had at its *first* compile, for the life
      of the process, so a worker moved from CPU 0 to CPU 1 kept running on CPU 0 (another
      instance's core). With pinning on, each compile reads the process's CPUs afresh and pins
      its threads inside them: inside this instance's cores, since the worker is pinned before
      it builds (and rebuilds) the model; and the moved worker ran on CPU 1 only.

    Raises ModelError if the model cannot be read or compiled, or takes more than one input.
    """

    computes_with_torch = False  # the runtime's own threads run the model

    def __init__(
        self,
        path: Path,
        threads: int,
        precision: Precision = Precision.FP32,
        input_spec: InputSpec | None = None,
        *,
        name: str = "model",
        example_seed: int = 0,
    ) -> None:
        check_threads(threads)
        check_precision(Backend.OPENVINO, precision)
        ov = import_runtime(Backend.OPENVINO)
        self.path = path
        self.precision = precision
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(path))
        except Exception as exc:  # openvino raises RuntimeError and its own types
            raise ModelError(f"cannot read OpenVINO model '{path}': {first_line(exc)}") from exc
        check_one_input(len(self._model.inputs), f"OpenVINO model '{path}'")
        declared = _declared_dims(self._model.inputs[0].get_partial_shape())
        _make_batch_dynamic(self._model, path)
        if input_spec is None:
            dtype = self._model.inputs[0].get_element_type().to_dtype().name
            input_spec = declared_spec(declared, dtype)
        super().__init__(input_spec, name=name, example_seed=example_seed)
        self.threads = threads
        # The CPUs the compiled model pins its threads to; see `set_threads`.
        self.cpus = frozenset(os.sched_getaffinity(0))
        self.compiled, self._request = self._compile(threads)

    def inference(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the model on the batch; its first output, batch first, as a tensor.

        The tensor views the infer request's output buffer, which the next `inference`
        overwrites: `postprocess` copies each row out, as the data path requires anyway.
        """
        # `preprocess` makes the batch contiguous, so `.numpy()` is a view.
        self._request.infer({0: batch.numpy()}, share_inputs=True)
        output = self._request.get_output_tensor(0).data
        return self.batch_first(torch.from_numpy(output), batch.shape[0])

    def set_threads(self, threads: int) -> None:
        """Compile the model again for `threads` threads on the CPUs the worker is pinned to
        now (a compiled model fixes both); a no-op if neither changed.

        The CPUs matter as much as the count: the compiled model pins its threads to the CPUs
        it was compiled on, so a worker moved to other CPUs with the same thread count must
        recompile too, or its next inference would run on the old ones.

        The model stays read in memory (its weights mapped from the .bin), so this is a
        compile only: for ResNet-50 on this 2-core machine, idle, 0.11 s to 2 threads and
        0.15 s to 1 (0.09-0.17 s with other tests running); no batch runs meanwhile. The old
        compiled model is freed after the new one is built, so memory briefly holds both.
        """
        check_threads(threads)
        cpus = frozenset(os.sched_getaffinity(0))
        if threads == self.threads and cpus == self.cpus:
            return
        started = time.perf_counter()
        self.compiled, self._request = self._compile(threads)
        logger.info(
            "model %s: OpenVINO model recompiled for %d threads on CPUs %s (was %d on %s) "
            "in %.0f ms",
            self.name, threads, sorted(cpus), self.threads, sorted(self.cpus),
            (time.perf_counter() - started) * 1000.0,
        )  # fmt: skip
        self.threads = threads
        self.cpus = cpus

    def shared_tensors(self) -> dict[str, Any]:
        """{}: the compiled model holds its weights in OpenVINO's own (repacked) buffers, not
        in torch tensors, so the pool cannot swap them for a shared copy."""
        return {}

    def _compile(self, threads: int) -> tuple[Any, Any]:
        ov = import_runtime(Backend.OPENVINO)
        props = ov.properties
        hints = ov.properties.hint
        inference_type = ov.Type.bf16 if self.precision is Precision.BF16 else ov.Type.f32
        config = {
            props.inference_num_threads: threads,
            props.num_streams: 1,
            hints.enable_cpu_pinning: True,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            hints.inference_precision: inference_type,
        }
        try:
            compiled = self._core.compile_model(
                self._model, "CPU", {key(): value for key, value in config.items()}
            )
        except Exception as exc:  # openvino raises RuntimeError and its own types
            raise ModelError(
                f"cannot compile OpenVINO model '{self.path}' for the CPU: {first_line(exc)}"
            ) from exc
        computes = compiled.get_property(hints.inference_precision())
        if computes != inference_type:  # OpenVINO falls back to f32 where bf16 is not native
            raise ModelError(
                f"OpenVINO computes {computes.get_type_name()} on this CPU, not the "
                f"{inference_type.get_type_name()} asked for (no native bf16 here): serve with "
                "--precision auto or fp32"
            )
        return compiled, compiled.create_infer_request()


def start_thread_pool(cpus: int) -> None:
    """Start OpenVINO's thread pool (TBB) in this process for up to `cpus` threads, by running
    a one-op model on that many.

    TBB sizes its pool once per process, from the CPUs the process may run on when OpenVINO
    first runs, and never grows it. A worker that booted pinned to one core and was later
    re-threaded to two in place then still ran its model on one thread (ResNet-50 bf16, batch
    1: 45-50 ms instead of 22-25 ms). The worker calls this while it may still use every core
    it could be given, before it pins itself to its own."""
    ov = import_runtime(Backend.OPENVINO)
    import numpy as np
    import openvino.opset13 as ops

    inputs = ops.parameter([1, 8], ov.Type.f32)
    model = ov.Model([ops.relu(inputs)], [inputs])
    config = {
        ov.properties.inference_num_threads(): cpus,
        ov.properties.num_streams(): 1,
        ov.properties.hint.enable_cpu_pinning(): True,
    }
    compiled = ov.Core().compile_model(model, "CPU", config)
    compiled.create_infer_request().infer({0: np.zeros((1, 8), np.float32)})


def _declared_dims(shape: Any) -> list[object]:
    """An OpenVINO PartialShape as a list: ints for static dimensions, None for dynamic."""
    if shape.rank.is_dynamic:
        return []
    return [d.get_length() if d.is_static else None for d in shape]


def _make_batch_dynamic(model: Any, path: Path) -> None:
    ov = import_runtime(Backend.OPENVINO)
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() == 0 or shape[0].is_dynamic:
        return
    dims = [ov.Dimension(-1), *list(shape)[1:]]
    try:
        model.reshape(ov.PartialShape(dims))
    except Exception as exc:  # openvino raises RuntimeError and its own types
        raise ModelError(
            f"OpenVINO model '{path}' fixes its batch size at {shape[0]} and cannot be "
            f"reshaped to a dynamic one: {first_line(exc)}"
        ) from exc
