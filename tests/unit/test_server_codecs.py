"""Request bodies to tensors (raw, image, text, JSON), sniffing, and outputs to JSON/bytes."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from packrat.models.inputs import InputSpec
from packrat.server import codecs, output_codecs
from packrat.server.codecs import BodyFormat
from packrat.server.errors import BadRequest, InferenceFailed, ServerError, UnsupportedMediaType
from packrat.server.responses import json_bytes

FLOAT = InputSpec((2, 3), "float32")
TOKENS = InputSpec((6,), "int64", low=0, high=100)
IMAGE = InputSpec((3, 8, 8), "float32")
PIXELS = 40_000_000


def decode(
    body: bytes | bytearray, content_type: str | None, spec: InputSpec | None
) -> torch.Tensor:
    fmt = codecs.body_format(content_type, body, spec)
    return codecs.decode(fmt, body, spec, max_image_pixels=PIXELS)


def image_bytes(
    fmt: str, size: tuple[int, int] = (16, 12), color: tuple[int, ...] = (255, 0, 0)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


# --- raw -----------------------------------------------------------------------------------


def test_raw_bytearray_is_wrapped_without_a_copy() -> None:
    values = torch.arange(6, dtype=torch.float32)
    body = bytearray(values.numpy().tobytes())
    tensor = decode(body, "application/octet-stream", FLOAT)
    assert tensor.shape == (2, 3) and tensor.dtype == torch.float32
    assert tensor.reshape(-1).tolist() == values.tolist()
    body[0:4] = np.float32(42).tobytes()
    assert tensor[0, 0].item() == 42  # shares the body's memory


def test_raw_bytes_are_copied_into_a_writable_tensor() -> None:
    body = np.arange(6, dtype=np.float32).tobytes()
    assert decode(body, "application/octet-stream", FLOAT).sum().item() == 15


def test_raw_of_the_wrong_size_names_the_sizes() -> None:
    with pytest.raises(BadRequest, match="20 bytes.*24 bytes"):
        decode(bytearray(20), "application/octet-stream", FLOAT)


def test_raw_token_ids_out_of_range_are_refused() -> None:
    ids = np.array([1, 2, 3, 4, 5, 100], dtype=np.int64)
    with pytest.raises(BadRequest, match=r"\[0, 100\)"):
        decode(bytearray(ids.tobytes()), "application/octet-stream", TOKENS)
    ids[-1] = 99
    assert decode(bytearray(ids.tobytes()), "application/octet-stream", TOKENS).tolist()[-1] == 99


# --- images --------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "content_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_image_is_resized_and_imagenet_normalized(fmt: str, content_type: str) -> None:
    tensor = decode(image_bytes(fmt), content_type, IMAGE)
    assert tensor.shape == (3, 8, 8) and tensor.dtype == torch.float32
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    means = tensor.mean(dim=(1, 2)).tolist()
    assert means == pytest.approx(expected, abs=0.05 if fmt == "JPEG" else 1e-5)


def test_grayscale_png_is_converted_to_rgb() -> None:
    out = io.BytesIO()
    Image.new("L", (5, 5), 128).save(out, format="PNG")
    assert decode(out.getvalue(), "image/png", IMAGE).shape == (3, 8, 8)


def test_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    body = image_bytes("PNG", size=(20, 20))
    fmt = codecs.body_format("image/png", body, IMAGE)
    with pytest.raises(BadRequest, match="20x20 pixels, over the limit of 100"):
        codecs.decode(fmt, body, IMAGE, max_image_pixels=100)


def test_corrupt_image_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="cannot decode the image"):
        decode(b"\xff\xd8\xff\xe0" + b"garbage" * 10, "image/jpeg", IMAGE)
    truncated = image_bytes("PNG")[:40]
    with pytest.raises(BadRequest, match="cannot decode the image"):
        decode(truncated, "image/png", IMAGE)


@pytest.mark.parametrize("spec", [TOKENS, InputSpec((1, 8, 8)), InputSpec((3, 8))])
def test_image_for_a_non_image_input_is_unsupported(spec: InputSpec) -> None:
    with pytest.raises(UnsupportedMediaType, match="images are for float"):
        decode(image_bytes("PNG"), "image/png", spec)


# --- sniffing ------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "", "application/x-www-form-urlencoded"])
def test_bodies_without_a_type_are_sniffed(content_type: str | None) -> None:
    assert codecs.body_format(content_type, image_bytes("JPEG"), IMAGE) is BodyFormat.IMAGE
    assert codecs.body_format(content_type, image_bytes("PNG"), IMAGE) is BodyFormat.IMAGE
    assert codecs.body_format(content_type, b" [1, 2]", TOKENS) is BodyFormat.JSON
    assert codecs.body_format(content_type, b"hello world", TOKENS) is BodyFormat.TEXT
    assert codecs.body_format(content_type, bytes(24), FLOAT) is BodyFormat.RAW
    with pytest.raises(UnsupportedMediaType, match="set Content-Type"):
        codecs.body_format(content_type, b"\x00\x01", FLOAT)


def test_an_image_sent_as_octet_stream_is_decoded_as_an_image() -> None:
    body = image_bytes("JPEG")
    assert codecs.body_format("application/octet-stream", body, IMAGE) is BodyFormat.IMAGE


def test_content_type_parameters_and_case_are_ignored() -> None:
    assert codecs.body_format("Application/JSON; charset=utf-8", b"", FLOAT) is BodyFormat.JSON
    assert codecs.body_format("application/vnd.x+json", b"", FLOAT) is BodyFormat.JSON


def test_unknown_content_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType, match="'application/xml' is not supported"):
        codecs.body_format("application/xml", b"<a/>", FLOAT)


def test_spec_less_model_takes_only_json() -> None:
    with pytest.raises(UnsupportedMediaType, match="takes JSON"):
        decode(bytearray(8), "application/octet-stream", None)


# --- text ----------------------------------------------------------------------------------


def test_text_is_hashed_into_the_vocabulary_stably_and_padded() -> None:
    first = decode(b"the cat sat", "text/plain", TOKENS).tolist()
    assert first == decode(b"the  cat\nsat", "text/plain", TOKENS).tolist()
    assert all(0 <= token < 100 for token in first)
    assert first[3:] == [0, 0, 0]
    assert first[0] != first[1]
    long = decode(" ".join(f"w{i}" for i in range(20)).encode(), "text/plain", TOKENS)
    assert long.shape == (6,)


def test_text_that_is_not_utf8_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="not UTF-8"):
        decode(b"\xff\xfe", "text/plain", TOKENS)


def test_text_needs_a_token_input_with_a_known_vocabulary() -> None:
    with pytest.raises(UnsupportedMediaType, match="token-id inputs"):
        decode(b"hi", "text/plain", FLOAT)
    with pytest.raises(UnsupportedMediaType, match="vocabulary size is unknown"):
        decode(b"hi", "text/plain", InputSpec((4,), "int64"))


# --- JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [[[0, 1, 2], [3, 4, 5]], [0, 1, 2, 3, 4, 5], {"data": [[0, 1.0, 2], [3, 4, 5]]}],
    ids=["nested", "flat", "data-field"],
)
def test_json_nested_flat_or_under_data(body: object) -> None:
    tensor = decode(json.dumps(body).encode(), "application/json", FLOAT)
    assert tensor.dtype == torch.float32
    assert tensor.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_json_token_ids_are_padded_and_truncated() -> None:
    assert decode(b"[5, 6]", "application/json", TOKENS).tolist() == [5, 6, 0, 0, 0, 0]
    assert decode(b"[1,2,3,4,5,6,7,8]", "application/json", TOKENS).tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("body", "spec", "problem"),
    [
        (b"[[1, 2], [3, 4]]", FLOAT, r"shape \[2, 2\]; expected \[2, 3\]"),
        (b"[[1, 2, 3], [4, 5]]", FLOAT, r"expected \[2, 3\]"),
        (b"7", FLOAT, r"shape \[\]; expected \[2, 3\]"),
        (b'[[1, 2, 3], [4, 5, "6"]]', FLOAT, "takes numbers, got values of type int, str"),
        (b"[[1, 2, 3], [4, 5, true]]", FLOAT, "bool"),
        (b"[[1, 2, 3], [4, 5, NaN]]", FLOAT, "not valid JSON"),
        (b"[[1, 2, 3], [4, 5, 1e400]]", FLOAT, "NaN or infinite"),
        (b"[1, 2.5]", TOKENS, "token ids must be integers"),
        (b"[1, -2]", TOKENS, r"must lie in \[0, 100\)"),
        (b"[1, 100000000000000000000000]", TOKENS, "out of range"),
        (b'{"inputs": [1]}', TOKENS, 'under "data"'),
        (b"[1, 2", TOKENS, "not valid JSON"),
        (b"\xff[1]", TOKENS, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, TOKENS, "not valid JSON"),
    ],
)
def test_json_problems_are_bad_requests_naming_them(
    body: bytes, spec: InputSpec, problem: str
) -> None:
    with pytest.raises(BadRequest, match=problem):
        decode(body, "application/json", spec)


def test_json_values_too_large_for_float16_are_refused() -> None:
    with pytest.raises(BadRequest, match="too large for float16"):
        decode(b"[1e6, 1, 1]", "application/json", InputSpec((3,), "float16"))


def test_json_for_a_spec_less_model_takes_its_shape_from_the_nesting() -> None:
    ints = decode(b"[[1, 2], [3, 4]]", "application/json", None)
    assert ints.dtype == torch.int64 and ints.shape == (2, 2)
    floats = decode(b"[1, 2.5]", "application/json", None)
    assert floats.dtype == torch.float32
    with pytest.raises(BadRequest, match="expected"):
        decode(b"[[1, 2], [3]]", "application/json", None)


# --- outputs -------------------------------------------------------------------------------


def _as_json(output: object) -> object:
    return json.loads(json_bytes(output_codecs.to_json(output)))


def test_outputs_to_json() -> None:
    assert _as_json(torch.tensor([[1.5, 2.0]])) == [[1.5, 2.0]]
    assert _as_json(torch.tensor([1.0], dtype=torch.bfloat16)) == [1.0]
    assert _as_json({"a": (torch.tensor(1), np.array([2]))}) == {"a": [1, [2]]}
    assert _as_json(torch.tensor([True, False])) == [True, False]
    assert _as_json(np.arange(6).reshape(2, 3).T) == [[0, 3], [1, 4], [2, 5]]
    assert _as_json(np.array([1, 2], dtype=">i4")) == [1, 2]  # not native: the slow path
    assert output_codecs.to_json(None) is None
    with pytest.raises(InferenceFailed, match="object"):
        output_codecs.to_json(object())


def test_finite_numeric_outputs_become_arrays_and_others_lists() -> None:
    assert isinstance(output_codecs.to_json(torch.zeros(3)), np.ndarray)
    assert isinstance(output_codecs.to_json(torch.zeros(3, requires_grad=True)), np.ndarray)
    assert isinstance(output_codecs.to_json(torch.tensor([1.0, math.inf])), list)
    assert isinstance(output_codecs.to_json(torch.tensor(2.5)), float)  # 0-d: a scalar
    assert isinstance(output_codecs.to_json(torch.zeros(2, dtype=torch.bfloat16)), list)


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=50))
def test_float32_outputs_round_trip_exactly(values: list[float]) -> None:
    tensor = torch.tensor(values, dtype=torch.float32)
    back = torch.tensor(_as_json(tensor), dtype=torch.float32)
    assert torch.equal(back, tensor)


def test_non_finite_values_are_written_like_torchserve() -> None:
    body = json_bytes(
        output_codecs.to_json({"x": torch.tensor([1.0, math.nan, -math.inf]), "n": None})
    )
    assert body == b'{"x":[1.0,NaN,-Infinity],"n":null}'
    assert json_bytes([np.array([math.inf])]) == b"[[Infinity]]"
    assert json_bytes({"big": 2**70}) == b'{"big":1180591620717411303424}'


def test_numel_counts_tensor_values() -> None:
    assert output_codecs.numel(torch.zeros(4, 5)) == 20
    assert output_codecs.numel([torch.zeros(2), {"x": np.zeros(3)}, 1.0]) == 6


def test_stack_outputs_names_and_stacks_them() -> None:
    stacked = output_codecs.stack_outputs([torch.tensor([1.0]), torch.tensor([2.0])])
    assert list(stacked) == ["output0"] and stacked["output0"].tolist() == [[1.0], [2.0]]
    pairs = output_codecs.stack_outputs([(torch.zeros(2), torch.ones(1))] * 3)
    assert {name: t.shape for name, t in pairs.items()} == {"output0": (3, 2), "output1": (3, 1)}
    assert list(output_codecs.stack_outputs([{"logits": torch.zeros(1)}])) == ["logits"]


@pytest.mark.parametrize(
    "outputs",
    [[torch.zeros(2), torch.zeros(3)], [{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], ["text"]],
)
def test_unstackable_outputs_are_inference_failures(outputs: list[object]) -> None:
    with pytest.raises(InferenceFailed):
        output_codecs.stack_outputs(outputs)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16", "int64", "uint8"])
def test_tensor_bytes_round_trip(dtype: str) -> None:
    tensor = torch.arange(6).to(getattr(torch, dtype)).reshape(2, 3)
    data = output_codecs.tensor_bytes(tensor)
    assert len(data) == 6 * codecs.ITEMSIZE[dtype]
    assert output_codecs.dtype_name(tensor) == dtype
    assert torch.equal(codecs.tensor_from_bytes(data, (2, 3), dtype, None), tensor)


# --- nothing but ServerErrors, whatever comes in -------------------------------------------

SPECS = [FLOAT, TOKENS, IMAGE, InputSpec((), "int8"), InputSpec((4,), "int32"), None]
CONTENT_TYPES = [
    None,
    "application/octet-stream",
    "image/jpeg",
    "image/png",
    "text/plain",
    "application/json",
    "application/x-www-form-urlencoded",
    "video/mp4",
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=8)
        | st.dictionaries(st.sampled_from(["data", "x"]), children, max_size=2)
    ),
    max_leaves=40,
)


def _decode_or_server_error(body: bytes, content_type: str | None, spec: InputSpec | None) -> None:
    try:
        tensor = decode(body, content_type, spec)
    except ServerError:
        return
    if spec is not None:
        assert tuple(tensor.shape) == spec.shape
        assert str(tensor.dtype) == f"torch.{spec.dtype}"


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=200)
    | st.sampled_from([b"\xff\xd8\xff" + bytes(30), b"\x89PNG\r\n\x1a\n" + bytes(30)]),
    content_type=st.sampled_from(CONTENT_TYPES),
    spec=st.sampled_from(SPECS),
)
def test_random_bytes_raise_only_server_errors(
    body: bytes, content_type: str | None, spec: InputSpec | None
) -> None:
    _decode_or_server_error(body, content_type, spec)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, spec=st.sampled_from(SPECS))
def test_random_json_raises_only_server_errors(value: object, spec: InputSpec | None) -> None:
    _decode_or_server_error(json.dumps(value).encode(), "application/json", spec)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=6, max_size=6))
def test_json_and_raw_decode_to_the_same_tensor(values: list[float]) -> None:
    from_json = decode(json.dumps(values).encode(), "application/json", FLOAT)
    raw = bytearray(np.array(values, dtype=np.float32).tobytes())
    assert torch.equal(from_json, decode(raw, "application/octet-stream", FLOAT))
    assert all(math.isfinite(v) for v in from_json.reshape(-1).tolist())


@pytest.mark.parametrize(
    ("accept", "form"),
    [
        (None, output_codecs.Answer.JSON),
        ("", output_codecs.Answer.JSON),
        ("text/html", output_codecs.Answer.JSON),  # nothing the server writes: JSON, as always
        ("application/json", output_codecs.Answer.JSON),
        ("*/*", output_codecs.Answer.JSON),
        ("application/json, application/octet-stream", output_codecs.Answer.JSON),
        ("application/octet-stream", output_codecs.Answer.RAW_ONLY),
        ("Application/Octet-Stream; q=1", output_codecs.Answer.RAW_ONLY),
        ("application/octet-stream, */*;q=0.1", output_codecs.Answer.RAW),
        ("text/plain, application/octet-stream, application/json", output_codecs.Answer.RAW),
    ],
)
def test_answer_form_is_the_first_of_raw_or_json_the_accept_header_names(
    accept: str | None, form: output_codecs.Answer
) -> None:
    assert output_codecs.answer_form(accept) is form


def test_to_raw_gives_little_endian_c_order_or_none_without_a_raw_form() -> None:
    big = np.arange(6, dtype=">i4").reshape(2, 3).T  # big-endian, not C-contiguous
    raw = output_codecs.to_raw(big)
    assert raw is not None and raw.dtype == np.dtype("<i4") and raw.flags.c_contiguous
    assert raw.tobytes() == np.ascontiguousarray(big, "<i4").tobytes()
    assert output_codecs.to_raw(torch.ones(2, dtype=torch.bfloat16)) is None
    assert output_codecs.to_raw({"a": np.ones(2)}) is None
    assert output_codecs.to_raw(np.float32(1.0)) is None  # 0-d: no shape to send
