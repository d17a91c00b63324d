"""Serve an ONNX model with ONNX Runtime's CPU execution provider, on exactly t threads.

Requests and outputs stay torch tensors, as for every handler: the batch goes to ONNX Runtime
as a numpy view of the stacked tensor and its output comes back as a tensor over ONNX Runtime's
array, neither copied. Importing this module imports torch, not onnxruntime: the runtime is
imported when a handler is built (inside a worker or a conversion).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from packrat.errors import ModelError
from packrat.models.backends import Backend, import_runtime
from packrat.models.inputs import InputSpec, declared_spec
from packrat.models.tensor_handler import BatchTensorHandler, check_one_input, check_threads
from packrat.models.tracing import first_line

logger = logging.getLogger(__name__)

# ONNX tensor element types (as ONNX Runtime spells them) -> torch dtype names.
_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}

_ERRORS_ONLY = 3  # ONNX Runtime's log severity: 0 verbose ... 3 error, 4 fatal


class OnnxRuntimeHandler(BatchTensorHandler):
    """Runs an ONNX file's one-input, batch-first model on `threads` intra-op threads.

    path: the .onnx file; its first input takes the batch, its first output is returned.
    threads: intra-op threads; the session is built at once, so its threads are created now,
        on the cores the calling thread is pinned to.
    input_spec: the per-request input; None takes the one the file declares, if it fixes every
        dimension after the batch.

    Session options, and why:
    - `intra_op_num_threads = threads`: exactly the instance's cores. An explicit count also
      turns off ONNX Runtime's own thread pinning, which would fight Packrat's.
    - `inter_op_num_threads = 1` and sequential execution: an instance runs one batch at a time,
      and operators run one after another; parallel branches would only compete for the same
      cores.
    - spinning allowed (`session.intra_op.allow_spinning = 1`, ONNX Runtime's default, set
      explicitly): between operators the pool threads spin instead of sleeping, which saves a
      futex wake-up per operator. Packrat pins each worker to cores no other instance uses, so
      the spinning burns only this instance's own cores, which would otherwise idle.

    Raises ModelError if the file cannot be loaded or does not take exactly one input.
    """

    computes_with_torch = False  # the runtime's own threads run the model

    def __init__(
        self,
        path: Path,
        threads: int,
        input_spec: InputSpec | None = None,
        *,
        name: str = "model",
        example_seed: int = 0,
    ) -> None:
        check_threads(threads)
        self.path = path
        self.threads = threads
        self.session = _build_session(path, threads)
        inputs = self.session.get_inputs()
        check_one_input(len(inputs), f"ONNX model '{path}'")
        self._input_name: str = inputs[0].name
        self._output_name: str = self.session.get_outputs()[0].name
        if input_spec is None:
            dtype = _ONNX_DTYPES.get(inputs[0].type, inputs[0].type)
            input_spec = declared_spec(list(inputs[0].shape), dtype)
        super().__init__(input_spec, name=name, example_seed=example_seed)

    def inference(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the session on the batch; its first output, batch first, as a tensor."""
        # `preprocess` makes the batch contiguous, so `.numpy()` is a view.
        (output,) = self.session.run([self._output_name], {self._input_name: batch.numpy()})
        return self.batch_first(torch.from_numpy(output), batch.shape[0])

    def set_threads(self, threads: int) -> None:
        """Rebuild the session with `threads` intra-op threads (ONNX Runtime cannot resize the
        pool of a live session); a no-op if the count is unchanged.

        The new pool threads are created by the calling thread, so they inherit the cores the
        worker has just been pinned to. Cost: a new session, i.e. reading the file and
        optimizing the graph again: for ResNet-50 on this 2-core machine, idle, 0.11 s to 2
        threads and 0.29 s to 1 (up to 0.19 s and 0.48 s with other tests running); no batch
        runs meanwhile.
        The old session is freed after the new one is built, so memory briefly holds both
        (ResNet-50's weights: ~100 MB).
        """
        check_threads(threads)
        if threads == self.threads:
            return
        started = time.perf_counter()
        self.session = _build_session(self.path, threads)
        logger.info(
            "model %s: ONNX Runtime session rebuilt for %d threads (was %d) in %.0f ms",
            self.name, threads, self.threads, (time.perf_counter() - started) * 1000.0,
        )  # fmt: skip
        self.threads = threads

    def shared_tensors(self) -> dict[str, Any]:
        """{}: the weights live inside the ONNX Runtime session, not in torch tensors, so the
        pool cannot swap them for a shared copy (each instance holds its own)."""
        return {}


def _build_session(path: Path, threads: int) -> Any:
    ort = import_runtime(Backend.ONNXRUNTIME)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.log_severity_level = _ERRORS_ONLY
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelError(f"cannot load ONNX model '{path}': {first_line(exc)}") from exc
