"""Tensors cross the worker pipes as raw bytes and come back equal, writable and typed."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from packrat.pool import tensor_pickle
from packrat.pool.tensor_pickle import rebuild_tensor

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
]


def _roundtrip(obj: object) -> object:
    return pickle.loads(tensor_pickle.dumps(obj))


@pytest.mark.parametrize("dtype", DTYPES)
def test_plain_tensors_roundtrip_through_raw_bytes(dtype: torch.dtype) -> None:
    tensor = (torch.arange(24) % 3).reshape(2, 3, 4).to(dtype)
    (back,) = _roundtrip((tensor,))  # type: ignore[misc]
    assert back.dtype == dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor)
    back.add_(1) if dtype is not torch.bool else back.logical_not_()  # writable, no warning
    assert not torch.equal(back, tensor)  # and not sharing the sender's memory


@pytest.mark.parametrize(
    ("dtype", "rebuilt_by"),
    [(torch.float32, b"rebuild_from_array"), (torch.bfloat16, b"rebuild_tensor")],
)
def test_raw_bytes_path_is_taken_for_plain_tensors(dtype: torch.dtype, rebuilt_by: bytes) -> None:
    """Through numpy where numpy has the dtype (fewer calls into torch), else torch's bytes."""
    frame = tensor_pickle.dumps(torch.zeros(4, dtype=dtype))
    assert b"packrat.pool.tensor_pickle" in frame and b"_load_from_bytes" not in frame
    assert rebuilt_by in frame


@pytest.mark.parametrize(
    "tensor",
    [
        torch.zeros(3, requires_grad=True),
        torch.nn.Parameter(torch.ones(2)),
        torch.zeros(2, 2).to_sparse(),
        torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8),
        torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64).conj(),
    ],
    ids=["requires-grad", "parameter", "sparse", "quantized", "conjugated"],
)
def test_other_tensors_keep_their_kind(tensor: torch.Tensor) -> None:
    back = _roundtrip(tensor)
    assert isinstance(back, torch.Tensor)
    assert type(back) is type(tensor) and back.requires_grad == tensor.requires_grad
    assert back.layout == tensor.layout and back.is_quantized == tensor.is_quantized
    assert torch.equal(_dense(back), _dense(tensor))


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_sparse:
        return tensor.to_dense()
    if tensor.is_quantized:
        return tensor.dequantize()
    return tensor.detach()


@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
    transpose=st.booleans(),
)
def test_any_shape_and_layout_roundtrips(shape: list[int], transpose: bool) -> None:
    tensor = torch.randn(shape) if shape else torch.tensor(1.25)
    if transpose and tensor.dim() >= 2:
        tensor = tensor.transpose(0, 1)  # not contiguous
    back = _roundtrip({"x": [tensor]})["x"][0]  # type: ignore[index]
    assert back.shape == tensor.shape and torch.equal(back, tensor)


def test_rebuild_of_empty_data_gives_an_empty_tensor() -> None:
    empty = rebuild_tensor(bytearray(), "int32", (0, 5))
    assert empty.shape == (0, 5) and empty.dtype == torch.int32


def test_numpy_arrays_and_plain_values_are_untouched() -> None:
    value = {"a": np.arange(3), "b": (1, "two", 3.0)}
    back = _roundtrip(value)
    assert isinstance(back, dict)
    assert np.array_equal(back["a"], value["a"]) and back["b"] == value["b"]
