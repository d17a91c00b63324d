"""InputSpec: validation, JSON round trip, deterministic example requests; parse_shape."""

from __future__ import annotations

import json

import pytest

from packrat.errors import ModelError
from packrat.models.inputs import InputSpec, parse_shape


def test_float_spec_defaults() -> None:
    spec = InputSpec((3, 32, 32))
    assert spec.dtype == "float32"
    assert not spec.is_integer
    assert spec.low is None and spec.high is None


def test_integer_spec_defaults_low_to_zero() -> None:
    spec = InputSpec((8,), "int64", high=100)
    assert spec.is_integer
    assert spec.low == 0


def test_integer_spec_without_high_gives_low_everywhere() -> None:
    spec = InputSpec((3,), "int32", low=7)
    assert spec.high is None
    assert [r.tolist() for r in spec.example_requests(2)] == [[7, 7, 7], [7, 7, 7]]
    assert InputSpec.from_json(spec.to_json()) == spec


def test_shape_list_is_normalized_to_tuple() -> None:
    assert InputSpec([3, 4], "float32") == InputSpec((3, 4), "float32")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (3, 0)}, "positive"),
        ({"shape": (3, -1)}, "positive"),
        ({"shape": (3, 2.5)}, "positive"),
        ({"shape": (3,), "dtype": "complex64"}, "not supported"),
        ({"shape": (3,), "dtype": "int64", "low": 5, "high": 5}, "empty"),
        ({"shape": (3,), "dtype": "float32", "high": 5}, "integer dtypes"),
    ],
)
def test_invalid_specs_raise_model_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        InputSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        InputSpec((3, 224, 224)),
        InputSpec((128,), "int64", low=0, high=30522),
        InputSpec((4,), "int32", low=-3, high=3),
        InputSpec((), "float64"),
    ],
)
def test_json_round_trip(spec: InputSpec) -> None:
    text = json.dumps(spec.to_json())
    assert InputSpec.from_json(json.loads(text)) == spec


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"shape": "3,4"},
        {"shape": [3], "dtype": 5},
        {"shape": [3], "dtype": "int64", "high": "9"},
    ],
)
def test_from_json_rejects_malformed(data: dict[str, object]) -> None:
    with pytest.raises(ModelError):
        InputSpec.from_json(data)


def test_example_requests_are_deterministic_and_valid() -> None:
    import torch

    spec = InputSpec((5,), "int64", low=2, high=7)
    first = spec.example_requests(4, seed=3)
    second = spec.example_requests(4, seed=3)
    other = spec.example_requests(4, seed=4)
    assert len(first) == 4
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    for request in first:
        assert request.shape == (5,) and request.dtype == torch.int64
        assert int(request.min()) >= 2 and int(request.max()) < 7


def test_example_requests_own_their_memory() -> None:
    requests = InputSpec((3, 8, 8)).example_requests(3)
    assert all(r.untyped_storage().nbytes() == r.numel() * 4 for r in requests)


def test_example_requests_do_not_touch_global_rng() -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    InputSpec((4,)).example_requests(2)
    assert torch.equal(torch.rand(3), expected)


def test_example_batch_casts_half_precision() -> None:
    import torch

    assert InputSpec((2,), "bfloat16").example_batch(3).dtype == torch.bfloat16


def test_example_batch_rejects_zero_batch() -> None:
    with pytest.raises(ModelError, match="batch_size"):
        InputSpec((2,)).example_batch(0)


@pytest.mark.parametrize(
    ("text", "shape"), [("3,224,224", (3, 224, 224)), ("3x32x32", (3, 32, 32)), (" 128 ", (128,))]
)
def test_parse_shape(text: str, shape: tuple[int, ...]) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "3,a", "3,0", "-1"])
def test_parse_shape_rejects_bad_text(text: str) -> None:
    with pytest.raises(ModelError):
        parse_shape(text)
