"""Request bodies to model input tensors, and model outputs to JSON or bytes.

One request body decodes to one input tensor of the model's `InputSpec` (its per-request
shape and dtype). Formats, chosen by `body_format` from the Content-Type:

- RAW (`application/octet-stream`): the tensor's bytes, little-endian, C order, exactly
  `numel * itemsize` of them; wrapped without a copy when the body is a bytearray.
- IMAGE (`image/jpeg`, `image/png`) for a float `[3, H, W]` spec: decoded with Pillow,
  converted to RGB, resized to W x H (bilinear), scaled to [0, 1] and normalized with the
  ImageNet mean and standard deviation, as torchvision's ImageNet models expect.
- TEXT (`text/plain`) for an integer `[L]` spec: whitespace-separated words, each word's
  UTF-8 bytes hashed (BLAKE2b) into [low, high); truncated or padded with `low` to L. A
  stable stand-in for a tokenizer: the zoo's models have random weights.
- JSON (`application/json`): a list nested like the shape, a flat list of all values,
  `{"data": <either>}`, or, for an integer `[L]` spec, token ids of any length (truncated or
  padded with `low`).

A body without a usable Content-Type (curl -T sends none, curl -d sends a form type) is
sniffed: JPEG/PNG magic bytes, then JSON, then UTF-8 text for token models, then raw bytes
of the exact size. Every failure raises BadRequest (malformed, wrong shape, dtype or value)
or UnsupportedMediaType (a format the model's input cannot take), naming the problem.

Answers go the other way in `packrat.server.output_codecs`. torch is imported inside the
functions, so importing this module (and the HTTP apps) does not load it.
"""

from __future__ import annotations

import enum
import hashlib
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pydantic_core

from packrat.models.inputs import INTEGER_DTYPES, InputSpec
from packrat.server.errors import BadRequest, ServerError, UnsupportedMediaType

if TYPE_CHECKING:
    import torch

Buffer = bytes | bytearray | memoryview

ITEMSIZE = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,  # outputs only
}
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SNIFFED_TYPES = ("", "application/x-www-form-urlencoded")


class BodyFormat(enum.Enum):
    """How a request body encodes its tensor."""

    RAW = "raw"
    IMAGE = "image"
    TEXT = "text"
    JSON = "json"


_MEDIA_TYPES = {
    "application/octet-stream": BodyFormat.RAW,
    "image/jpeg": BodyFormat.IMAGE,
    "image/jpg": BodyFormat.IMAGE,
    "image/png": BodyFormat.IMAGE,
    "text/plain": BodyFormat.TEXT,
    "application/json": BodyFormat.JSON,
}


def body_format(content_type: str | None, body: Buffer, spec: InputSpec | None) -> BodyFormat:
    """The format of `body` given its Content-Type header (None if absent).

    Raises UnsupportedMediaType for a content type no format handles, or a body without one
    that sniffing cannot place.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type.endswith("+json"):
        return BodyFormat.JSON
    if media_type in _SNIFFED_TYPES:
        return _sniff(body, spec)
    fmt = _MEDIA_TYPES.get(media_type)
    if fmt is None:
        known = ", ".join(sorted(_MEDIA_TYPES))
        raise UnsupportedMediaType(f"content type {media_type!r} is not supported (use {known})")
    if fmt is BodyFormat.RAW and spec is not None and len(body) != _nbytes(spec):
        # Clients that cannot name an image's type send it as octet-stream.
        return _image_magic(body) or fmt
    return fmt


def decode(
    fmt: BodyFormat, body: Buffer, spec: InputSpec | None, *, max_image_pixels: int
) -> torch.Tensor:
    """One request's input tensor, of `spec`'s shape and dtype, from `body` in `fmt`.

    With no spec (the model declares none), only JSON is accepted: its shape is the nesting
    and its dtype int64 if every value is an integer, else float32.
    """
    if fmt is BodyFormat.JSON:
        return _decode_json(body, spec)
    if spec is None:
        raise UnsupportedMediaType(
            f"this model declares no input shape, so it takes JSON, not {fmt.value} bodies"
        )
    if fmt is BodyFormat.RAW:
        return tensor_from_bytes(body, spec.shape, spec.dtype, spec)
    if fmt is BodyFormat.IMAGE:
        return _decode_image(body, spec, max_image_pixels)
    return _decode_text(body, spec)


def tensor_from_bytes(
    buffer: Buffer, shape: Sequence[int], dtype: str, spec: InputSpec | None
) -> torch.Tensor:
    """The tensor whose little-endian C-order bytes are exactly `buffer`.

    Shares memory with a bytearray (zero-copy); bytes and memoryviews, which may be read-only
    or unaligned, are copied once. Integer values are checked against `spec`'s range.
    """
    import torch

    expected = math.prod(shape) * ITEMSIZE[dtype]
    if len(buffer) != expected:
        raise BadRequest(
            f"raw body is {len(buffer)} bytes; a {dtype} tensor of shape {list(shape)} "
            f"is {expected} bytes"
        )
    writable = buffer if isinstance(buffer, bytearray) else bytearray(buffer)
    if expected == 0:
        tensor = torch.empty(0, dtype=getattr(torch, dtype))
    else:
        tensor = torch.frombuffer(writable, dtype=getattr(torch, dtype))
    tensor = tensor.reshape(tuple(shape))
    if dtype in INTEGER_DTYPES:
        _check_range(tensor.numpy(), spec, dtype)  # numpy shares the memory
    return tensor


def tensor_from_data(
    data: Any, shape: Sequence[int], dtype: str, spec: InputSpec | None
) -> torch.Tensor:
    """A tensor of `shape` and `dtype` from JSON `data`: nested like `shape`, or flat.

    Integer dtypes take only integers; float dtypes take integers and floats, all finite.
    """
    leaves = _leaves(data, tuple(shape))
    return _tensor(leaves, tuple(shape), dtype, spec)


def _nbytes(spec: InputSpec) -> int:
    return math.prod(spec.shape) * ITEMSIZE[spec.dtype]


def _image_magic(body: Buffer) -> BodyFormat | None:
    head = bytes(body[:8])
    return BodyFormat.IMAGE if head.startswith((_JPEG_MAGIC, _PNG_MAGIC)) else None


def _sniff(body: Buffer, spec: InputSpec | None) -> BodyFormat:
    if _image_magic(body):
        return BodyFormat.IMAGE
    if bytes(body[:64]).lstrip()[:1] in (b"[", b"{"):
        return BodyFormat.JSON
    if spec is not None and spec.is_integer and len(spec.shape) == 1:
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return BodyFormat.TEXT
    if spec is not None and len(body) == _nbytes(spec):
        return BodyFormat.RAW
    raise UnsupportedMediaType(
        "the body has no Content-Type and is not an image, JSON, text or raw tensor bytes "
        "of this model's input size; set Content-Type"
    )


def _decode_json(body: Buffer, spec: InputSpec | None) -> torch.Tensor:
    try:
        # pydantic-core's parser is ~4x faster than json.loads on large arrays of numbers,
        # and bounds nesting depth itself. NaN and Infinity are not JSON: refused.
        text = body if isinstance(body, bytes | bytearray) else bytes(body)
        data = pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        if "data" not in data:
            raise BadRequest('a JSON object body must hold the input under "data"')
        data = data["data"]
    if spec is None:
        shape = _nested_shape(data)
        leaves = _leaves(data, shape)
        integral = all(type(leaf) is int for leaf in leaves)
        return _tensor(leaves, shape, "int64" if integral else "float32", None)
    if spec.is_integer and len(spec.shape) == 1 and isinstance(data, list):
        if not all(type(value) is int for value in data):
            raise BadRequest(f"token ids must be integers, got {_describe_values(data)}")
        length = spec.shape[0]
        data = data[:length] + [spec.low or 0] * (length - len(data))
    return tensor_from_data(data, spec.shape, spec.dtype, spec)


def _decode_text(body: Buffer, spec: InputSpec) -> torch.Tensor:
    import torch

    if not spec.is_integer or len(spec.shape) != 1:
        raise UnsupportedMediaType(
            f"text bodies are for token-id inputs; this model takes {spec.dtype} {list(spec.shape)}"
        )
    if spec.high is None:
        raise UnsupportedMediaType(
            "this model's vocabulary size is unknown, so text cannot be tokenized; "
            "send token ids as JSON"
        )
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"text body is not UTF-8: {exc}") from None
    low = spec.low or 0
    vocab = spec.high - low
    length = spec.shape[0]
    ids = [low + _word_hash(word) % vocab for word in text.split()[:length]]
    ids += [low] * (length - len(ids))
    return torch.tensor(ids, dtype=getattr(torch, spec.dtype))


def _word_hash(word: str) -> int:
    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _decode_image(body: Buffer, spec: InputSpec, max_pixels: int) -> torch.Tensor:
    import torch
    from PIL import Image

    if spec.is_integer or len(spec.shape) != 3 or spec.shape[0] != 3:
        raise UnsupportedMediaType(
            f"images are for float [3, H, W] inputs; this model takes {spec.dtype} "
            f"{list(spec.shape)}"
        )
    _, height, width = spec.shape
    try:
        with Image.open(io.BytesIO(bytes(body)), formats=("JPEG", "PNG")) as image:
            if image.width * image.height > max_pixels:
                raise BadRequest(
                    f"image is {image.width}x{image.height} pixels, over the limit of "
                    f"{max_pixels} pixels"
                )
            image.draft("RGB", (width, height))  # JPEG: decode at a reduced scale when larger
            rgb = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    except ServerError:
        raise
    except Exception as exc:
        # Pillow reports corrupt input with many exception types (OSError, ValueError,
        # SyntaxError, EOFError, struct.error, DecompressionBombError, ...): all are the
        # client's bad image.
        raise BadRequest(f"cannot decode the image: {type(exc).__name__}: {exc}") from None
    pixels = np.asarray(rgb, dtype=np.float32)  # [H, W, 3] in 0..255
    pixels = (pixels * (1.0 / 255.0) - _IMAGENET_MEAN) / _IMAGENET_STD
    chw = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
    return chw if spec.dtype == "float32" else chw.to(getattr(torch, spec.dtype))


def _nested_shape(data: Any) -> tuple[int, ...]:
    """The shape a nested list claims, following first elements (checked by `_leaves`)."""
    shape: list[int] = []
    while isinstance(data, list):
        shape.append(len(data))
        if not data:
            break
        data = data[0]
    return tuple(shape)


def _leaves(data: Any, shape: tuple[int, ...]) -> list[Any]:
    """The values of `data` in C order, if it is nested exactly like `shape` or is a flat
    list of all its values; raises BadRequest naming the shape otherwise."""
    total = math.prod(shape)
    flat = isinstance(data, list) and len(data) == total and len(shape) != 1
    if flat and not any(isinstance(item, list) for item in data):
        return list(data)
    level = [data]
    for size in shape:
        items: list[Any] = []
        for item in level:
            if not isinstance(item, list) or len(item) != size:
                raise BadRequest(
                    f"input has shape {list(_nested_shape(data))}; expected {list(shape)} "
                    f"(or a flat list of {total} values)"
                )
            items.extend(item)
        level = items
    return level


def _tensor(
    leaves: list[Any], shape: tuple[int, ...], dtype: str, spec: InputSpec | None
) -> torch.Tensor:
    # Checks and conversions run in numpy: torch's elementwise ops would wake its intra-op
    # thread pool in the server process (tens of ms on a busy host, and cores the pinned
    # instances need). torch only wraps the result.
    import torch

    types = set(map(type, leaves))
    integral = not dtype.startswith(("float", "bfloat"))
    allowed = {int} if integral else {int, float}
    if not types <= allowed:
        kind = "integers" if integral else "numbers"
        raise BadRequest(f"{dtype} input takes {kind}, got {_describe_values(leaves)}")
    try:
        array = np.array(leaves, dtype=np.int64 if integral else np.float64).reshape(shape)
    except OverflowError:
        raise BadRequest(f"{dtype} input holds a value out of range") from None
    if integral:
        _check_range(array, spec, dtype)
        return torch.from_numpy(array.astype(dtype, copy=False))
    if not np.isfinite(array).all():
        raise BadRequest("input holds NaN or infinite values")
    if array.size and float(np.abs(array).max()) > _FLOAT_MAX[dtype]:
        raise BadRequest(f"input holds values too large for {dtype}")
    if dtype == "bfloat16":  # numpy has no bfloat16
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(array.astype(dtype, copy=False))


_FLOAT_MAX = {
    "float64": float(np.finfo(np.float64).max),
    "float32": float(np.finfo(np.float32).max),
    "float16": float(np.finfo(np.float16).max),
    "bfloat16": 3.3895313892515355e38,
}


def _check_range(values: np.ndarray[Any, Any], spec: InputSpec | None, dtype: str) -> None:
    """Integer inputs (token ids, class indices) index tables: one out of range would fail
    the whole batch it joins, so it is refused here. `dtype`'s limits apply too (the values
    may still be converted to it)."""
    if values.size == 0 or values.dtype.kind not in "iu":
        return
    low, high = int(values.min()), int(values.max())
    info = np.iinfo(np.dtype(dtype))
    bounds = [(int(info.min), int(info.max) + 1)]
    if spec is not None and spec.is_integer:
        bounds.append((spec.low or 0, spec.high if spec.high is not None else high + 1))
    for lower, upper in bounds:
        if low < lower or high >= upper:
            raise BadRequest(f"input values must lie in [{lower}, {upper}); got {low}..{high}")


def _describe_values(values: list[Any]) -> str:
    kinds = sorted({type(value).__name__ for value in values})
    return "values of type " + ", ".join(kinds)
