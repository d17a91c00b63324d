"""TensorHandler: request validation, output unwrapping, per-request outputs."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
import torch

from packrat.errors import ModelError
from packrat.models.inputs import InputSpec
from packrat.models.tensor_handler import TensorHandler, first_tensor

SPEC = InputSpec((4,), "float32")


class Wrapped(torch.nn.Module):
    """Doubles its input and returns it wrapped the way `wrap` says."""

    def __init__(self, wrap: str) -> None:
        super().__init__()
        self.wrap = wrap

    def forward(self, x: torch.Tensor) -> Any:
        y = x * 2
        if self.wrap == "tuple":
            return (y, x)
        if self.wrap == "dict":
            return OrderedDict(logits=y, extra=x)
        if self.wrap == "nested":
            return [(y,)]
        if self.wrap == "none":
            return None
        if self.wrap == "scalar":
            return y.sum()
        return y


def _handler(wrap: str = "tensor", spec: InputSpec | None = SPEC) -> TensorHandler:
    return TensorHandler(Wrapped(wrap), spec, name="m")


@pytest.mark.parametrize("wrap", ["tensor", "tuple", "dict", "nested"])
def test_handle_unwraps_first_tensor(wrap: str) -> None:
    requests = [torch.full((4,), float(i)) for i in range(3)]
    outputs = _handler(wrap).handle(requests)
    assert [o.tolist() for o in outputs] == [[2.0 * i] * 4 for i in range(3)]


def test_hf_model_output_is_unwrapped() -> None:
    from transformers.modeling_outputs import BaseModelOutput

    tensor = torch.ones(2, 3)
    assert first_tensor(BaseModelOutput(last_hidden_state=tensor)) is tensor


@pytest.mark.parametrize(
    ("wrap", "message"), [("none", "holds no tensor"), ("scalar", "batch-first")]
)
def test_bad_outputs_are_model_errors(wrap: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        _handler(wrap).handle([torch.zeros(4)])


def test_postprocess_returns_copies_not_views() -> None:
    outputs = _handler().postprocess(torch.arange(12.0).reshape(3, 4))
    assert all(o.untyped_storage().nbytes() == 4 * 4 for o in outputs)


def test_numpy_requests_are_accepted() -> None:
    outputs = _handler().handle([np.ones(4, dtype=np.float32)])
    assert outputs[0].tolist() == [2.0] * 4


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([], "empty list"),
        ([[1.0, 2.0, 3.0, 4.0]], "request 0 is a list"),
        ([torch.zeros(4), torch.zeros(5)], r"request 1 has shape \[5\]; model 'm' expects \[4\]"),
        ([torch.zeros(4, dtype=torch.float64)], "request 0 has dtype float64; .* expects float32"),
    ],
)
def test_preprocess_names_the_bad_request(requests: list[Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        _handler().preprocess(requests)


def test_without_spec_requests_must_agree() -> None:
    handler = _handler(spec=None)
    assert handler.preprocess([torch.zeros(2, 2), torch.ones(2, 2)]).shape == (2, 2, 2)
    with pytest.raises(ModelError, match="request 1 has shape"):
        handler.preprocess([torch.zeros(2, 2), torch.zeros(3)])


def test_without_spec_example_requests_explains_the_fix() -> None:
    with pytest.raises(ModelError, match="no input spec; pass --input-shape and --input-dtype"):
        _handler(spec=None).example_requests(2)


def test_integer_requests_are_range_checked() -> None:
    handler = TensorHandler(torch.nn.Embedding(10, 3), InputSpec((2,), "int64", high=10))
    assert handler.handle([torch.tensor([0, 9])])[0].shape == (2, 3)
    with pytest.raises(ModelError, match=r"values in \[0, 10\); got values in \[0, 10\]"):
        handler.preprocess([torch.tensor([0, 10])])


def test_integer_requests_without_high_are_checked_against_low_only() -> None:
    handler = TensorHandler(torch.nn.Embedding(10, 3), InputSpec((2,), "int64", low=1))
    assert len(handler.handle(handler.example_requests(2))) == 2
    with pytest.raises(ModelError, match=r"expects values >= 1; got values in \[0, 3\]"):
        handler.preprocess([torch.tensor([0, 3])])


def test_example_requests_match_spec_and_run() -> None:
    handler = _handler()
    requests = handler.example_requests(5)
    assert len(requests) == 5
    assert all(
        torch.equal(a, b) for a, b in zip(requests, handler.example_requests(5), strict=True)
    )
    assert len(handler.handle(requests)) == 5


def test_shared_tensors_are_parameters_and_buffers() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    tensors = TensorHandler(module, SPEC).shared_tensors()
    assert set(tensors) == {
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    assert tensors["0.weight"] is module[0].weight
