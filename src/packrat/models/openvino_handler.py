"""Serve an OpenVINO model (IR .xml, or .onnx) with the CPU plugin, on exactly t threads.

Requests and outputs stay torch tensors: the batch goes to OpenVINO as a numpy view of the
stacked tensor (`share_inputs`), and the output comes back as a tensor over the infer request's
own output buffer, neither copied. Importing this module imports torch, not openvino: the
runtime is imported when a handler is built (inside a worker or a conversion).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from packrat.errors import ModelError
from packrat.models.backends import Backend, Precision, check_precision, import_runtime
from packrat.models.inputs import InputSpec, declared_spec
from packrat.models.tensor_handler import BatchTensorHandler, check_one_input, check_threads
from packrat.models.tracing import first_line


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
    - `ENABLE_CPU_PINNING = True`: OpenVINO pins each of its threads to one CPU of the
      process's, so the instance's threads stay on its own cores.

    OpenVINO places its threads once per process: it reads the CPUs a process may use when it
    first runs there, and every later compile pins to those, whatever the process's CPUs are
    then (measured with OpenVINO 2026.4 on 2 CPUs: a process that first ran on both CPUs,
    then pinned to CPU 1 and compiled for one thread, computed on CPU 0; with pinning off,
    its threads were let onto both CPUs; a process that first ran on CPU 1 alone computed on
    CPU 1, and on one thread even when later given both). So an instance cannot move: its
    sources say so (`ModelSource.moves_in_place`), the worker loads it pinned to the
    instance's cores, and the pool starts a new worker where a plan puts the instance on
    other cores. Two one-thread instances of gpt2 whose workers had first run on both CPUs
    both computed on CPU 0, each 2x slower than profiled.

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
        # The CPUs the compiled model pins its threads to: it cannot move (see the class).
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
        """Nothing to do on the threads and CPUs the model was compiled for; ModelError on
        others: OpenVINO would keep computing where it first ran (see the class), so the pool
        starts a new worker instead of moving this one."""
        check_threads(threads)
        cpus = frozenset(os.sched_getaffinity(0))
        if threads != self.threads or cpus != self.cpus:
            raise ModelError(
                f"model {self.name}: OpenVINO computes on the CPUs it first ran on "
                f"{sorted(self.cpus)} ({self.threads} threads); it cannot move to "
                f"{sorted(cpus)} ({threads} threads): start a new process there"
            )

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
