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

from packrat.models.inputs import InputSpec, declared_spec
from packrat.models.onnxruntime_session import build_session, open_session
from packrat.models.tensor_handler import BatchTensorHandler, check_one_input, check_threads

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


class OnnxRuntimeHandler(BatchTensorHandler):
    """Runs an ONNX file's one-input, batch-first model on `threads` intra-op threads.

    path: the .onnx file; its first input takes the batch, its first output is returned.
    threads: intra-op threads; the session is built at once, so its threads are created now,
        on the cores the calling thread is pinned to.
    input_spec: the per-request input; None takes the one the file declares, if it fixes every
        dimension after the batch.

    shared: build the session from ONNX Runtime's optimized copy of the file, whose weights
        every instance maps from one data file instead of holding its own
        (`onnxruntime_session`: the copy, where it is kept, and the session options with their
        reasons); False loads the file itself (a one-off look at a file, such as the check of
        a conversion before it is published, which would leave a copy nobody uses).

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
        shared: bool = True,
    ) -> None:
        check_threads(threads)
        self.path = path
        self.threads = threads
        self.shared = shared
        self.session = self._session(threads, name)
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
        worker has just been pinned to. Cost: a new session, built from the optimized copy
        (`onnxruntime_session`), so the graph is not optimized again: bert-base 0.25 s where a
        session from the .onnx file takes 1.46 s (one thread, this 2-core machine); no batch
        runs meanwhile. The old session is freed after the new one is built; both map the
        same weights.
        """
        check_threads(threads)
        if threads == self.threads:
            return
        started = time.perf_counter()
        self.session = self._session(threads, self.name)
        logger.info(
            "model %s: ONNX Runtime session rebuilt for %d threads (was %d) in %.0f ms",
            self.name, threads, self.threads, (time.perf_counter() - started) * 1000.0,
        )  # fmt: skip
        self.threads = threads

    def _session(self, threads: int, name: str) -> Any:
        if self.shared:
            return build_session(self.path, threads, name=name)
        return open_session(self.path, threads, optimized=False)

    def shared_tensors(self) -> dict[str, Any]:
        """{}: the weights live inside the ONNX Runtime session, not in torch tensors, so the
        pool cannot swap them for its shared copy; the sessions share them instead, mapped
        from the optimized copy's data file."""
        return {}
