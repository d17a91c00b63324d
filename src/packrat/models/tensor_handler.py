"""Handlers for models that map one batch tensor to one batch tensor.

A request is one tensor of the model's per-request shape; `BatchTensorHandler` stacks a list of
requests into a batch, checks it against the input spec, and splits the output back along
dimension 0. `TensorHandler` runs a torch module on the batch under `torch.inference_mode()`;
every built-in torch format (zoo, TorchScript, torch.export) serves through it. The ONNX Runtime
and OpenVINO handlers (`onnxruntime_handler`, `openvino_handler`) reuse the request handling.
Importing this module imports torch: sources import it only inside `load()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from packrat.errors import ModelError
from packrat.models.base import Handler
from packrat.models.inputs import InputSpec

# Models wrap outputs in tuples, dicts or HF ModelOutputs (a dict); a few levels is plenty.
_MAX_OUTPUT_NESTING = 4


def check_threads(threads: int) -> None:
    """ValueError unless a runtime's thread count is at least 1."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")


def check_one_input(inputs: int, what: str) -> None:
    """ModelError naming `what` (e.g. "ONNX model 'm.onnx'") unless it takes one input."""
    if inputs != 1:
        raise ModelError(
            f"{what} takes {inputs} inputs; Packrat serves models that take one batch tensor"
        )


class BatchTensorHandler(Handler):
    """Requests that are tensors of one shape and dtype, stacked into a batch for `inference`.

    input_spec: the per-request shape and dtype; requests are checked against it. Without one
        requests need only agree with each other, and `example_requests` raises ModelError.
    name: the model name used in error messages.
    example_seed: seed of the generator behind `example_requests`.

    Subclasses implement `inference(batch) -> batch-first tensor`.
    """

    def __init__(
        self,
        input_spec: InputSpec | None = None,
        *,
        name: str = "model",
        example_seed: int = 0,
    ) -> None:
        self.input_spec = input_spec
        self.name = name
        self.example_seed = example_seed

    def preprocess(self, requests: list[Any]) -> torch.Tensor:
        """Stack tensor (or numpy) requests into a [len(requests), *shape] batch.

        Raises ModelError naming the first request whose type, shape, dtype or (for integer
        inputs) value range does not match the input spec.
        """
        if not requests:
            raise ModelError(f"model '{self.name}' got an empty list of requests")
        tensors = [_as_tensor(r, i) for i, r in enumerate(requests)]
        expected_shape, expected_dtype = self._expected(tensors[0])
        for i, t in enumerate(tensors):
            if tuple(t.shape) != expected_shape:
                raise ModelError(
                    f"request {i} has shape {list(t.shape)}; model '{self.name}' expects "
                    f"{list(expected_shape)} per request"
                )
            if t.dtype != expected_dtype:
                raise ModelError(
                    f"request {i} has dtype {_dtype_name(t.dtype)}; model '{self.name}' "
                    f"expects {_dtype_name(expected_dtype)}"
                )
        # One request (the lowest-latency case) becomes a batch without a copy.
        batch = tensors[0].unsqueeze(0).contiguous() if len(tensors) == 1 else torch.stack(tensors)
        self._check_range(batch)
        return batch

    def postprocess(self, outputs: torch.Tensor) -> list[torch.Tensor]:
        """One output tensor per request, each a copy that owns its memory.

        Copies, not views: a pickled view carries the whole batch's storage, so sending views
        to the requests' callers would copy the batch once per request.
        """
        return [row.clone() for row in outputs.unbind(0)]

    def example_requests(self, batch_size: int) -> list[Any]:
        """`batch_size` deterministic valid requests; ModelError if there is no input spec."""
        if self.input_spec is None:
            raise ModelError(
                f"model '{self.name}' has no input spec; pass --input-shape and --input-dtype"
            )
        return list(self.input_spec.example_requests(batch_size, self.example_seed))

    def batch_first(self, output: torch.Tensor, batch_size: int) -> torch.Tensor:
        """`output` if its first dimension is the batch's; else ModelError naming its shape."""
        if output.dim() == 0 or output.shape[0] != batch_size:
            raise ModelError(
                f"model '{self.name}' returned shape {list(output.shape)} for a batch of "
                f"{batch_size}; its output must be batch-first"
            )
        return output

    def _expected(self, first: torch.Tensor) -> tuple[tuple[int, ...], torch.dtype]:
        # Without a spec the first request defines what the others must look like.
        if self.input_spec is None:
            return tuple(first.shape), first.dtype
        dtype = getattr(torch, self.input_spec.dtype)
        assert isinstance(dtype, torch.dtype)  # InputSpec only admits torch dtype names
        return self.input_spec.shape, dtype

    def _check_range(self, batch: torch.Tensor) -> None:
        # Out-of-range token ids would fail deep inside an embedding with an index error.
        spec = self.input_spec
        if spec is None or not spec.is_integer or batch.numel() == 0:
            return
        low, high = int(batch.min()), int(batch.max())
        if low < (spec.low or 0) or (spec.high is not None and high >= spec.high):
            allowed = f">= {spec.low}" if spec.high is None else f"in [{spec.low}, {spec.high})"
            raise ModelError(
                f"model '{self.name}' expects values {allowed}; got values in [{low}, {high}]"
            )


class TensorHandler(BatchTensorHandler):
    """Serves `module(batch) -> tensor` for requests that are tensors of one shape and dtype.

    module: an eager, TorchScript or `torch.export` module, already in eval mode; the caller
        owns moving it to eval (exported modules refuse `.eval()`).
    input_spec, name, example_seed: as for `BatchTensorHandler`.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        input_spec: InputSpec | None = None,
        *,
        name: str = "model",
        example_seed: int = 0,
    ) -> None:
        super().__init__(input_spec, name=name, example_seed=example_seed)
        self.module = module

    def inference(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the module on a batch; returns the first tensor of its output, batch first."""
        with torch.inference_mode():
            output = self.module(batch)
        tensor = first_tensor(output)
        if tensor is None:
            raise ModelError(
                f"model '{self.name}' returned {type(output).__name__}, which holds no tensor"
            )
        return self.batch_first(tensor, batch.shape[0])

    def shared_tensors(self) -> dict[str, Any]:
        """The module's parameters and buffers by name: the live tensors its forward reads.

        Works for eager, TorchScript and exported modules alike; `tensor.set_(other)` under
        `torch.no_grad()` on each makes the module compute with `other` from then on.
        """
        tensors: dict[str, Any] = dict(self.module.named_parameters())
        tensors.update(self.module.named_buffers())
        return tensors


def first_tensor(output: Any, depth: int = 0) -> torch.Tensor | None:
    """The first tensor in a tensor, tuple, list or mapping (HF ModelOutput); None if none."""
    if isinstance(output, torch.Tensor):
        return output
    if depth >= _MAX_OUTPUT_NESTING:
        return None
    if isinstance(output, Mapping):
        items: list[Any] = list(output.values())
    elif isinstance(output, tuple | list):
        items = list(output)
    else:
        return None
    for item in items:
        found = first_tensor(item, depth + 1)
        if found is not None:
            return found
    return None


def _as_tensor(request: Any, index: int) -> torch.Tensor:
    if isinstance(request, torch.Tensor):
        return request
    if isinstance(request, np.ndarray):
        return torch.from_numpy(request)
    raise ModelError(
        f"request {index} is a {type(request).__name__}; expected a torch.Tensor or numpy array"
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
