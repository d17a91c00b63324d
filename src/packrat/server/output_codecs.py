"""Model outputs to answers: JSON-ready values, raw tensor bytes, and named batch tensors.

The other half of `packrat.server.codecs` (which decodes request bodies): what the HTTP and
gRPC edges send back. `to_json` and `to_raw` shape one request's output for the TorchServe
route (`answer_form` reads the client's Accept header); `stack_outputs` stacks the outputs of
the requests of one Open Inference Protocol call into batch-first tensors by output name.

torch is imported inside the functions, so importing this module does not load it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from packrat.server.errors import InferenceFailed

if TYPE_CHECKING:
    import torch


def to_json(output: Any) -> Any:
    """A model output (tensor, array, or lists/tuples/dicts of them) as JSON-ready values.

    Tensors and arrays of booleans, integers or finite floats become C-contiguous numpy arrays
    of at least one dimension, which `responses.json_bytes` writes without making a Python
    float per value (30x faster for 1000 logits); other tensors become nested lists.
    Raises InferenceFailed for an output that has no JSON form.
    """
    array = _plain_array(output)
    if array is not None:
        return array
    if hasattr(output, "tolist") and callable(output.tolist):
        return output.tolist()  # torch.Tensor and numpy arrays, bfloat16 included
    if isinstance(output, Mapping):
        return {str(key): to_json(value) for key, value in output.items()}
    if isinstance(output, list | tuple):
        return [to_json(item) for item in output]
    if output is None or isinstance(output, str | int | float | bool):
        return output
    raise InferenceFailed(f"the model returned a {type(output).__name__}, which has no JSON form")


def _plain_array(output: Any) -> np.ndarray[Any, Any] | None:
    """`output` as a C-contiguous numpy array if it is a tensor or array of >= 1 dimension,
    of a dtype JSON writes natively (bool, int, uint, float up to 64 bits), all finite."""
    array = _numeric_array(output)
    if array is None or not array.dtype.isnative:
        return None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return None
    return np.ascontiguousarray(array)


def _numeric_array(output: Any) -> np.ndarray[Any, Any] | None:
    """`output` as a numpy array (no copy) if it is a tensor or array of >= 1 dimension of
    bool, int, uint or float up to 64 bits; else None."""
    if isinstance(output, np.ndarray):
        array = output
    elif type(output).__name__ == "Tensor" and hasattr(output, "detach"):
        try:
            array = output.detach().numpy()
        except (TypeError, RuntimeError):  # bfloat16, not on the CPU, ...
            return None
    else:
        return None
    if array.ndim == 0 or array.dtype.kind not in "biuf" or array.dtype.itemsize > 8:
        return None
    return array


RAW_MEDIA_TYPE = "application/octet-stream"
_JSON_OR_ANY = frozenset({"application/json", "application/*", "*/*"})


class Answer(enum.Enum):
    """The form of an answer a client's Accept header asks for."""

    JSON = "json"
    RAW = "raw"  # the output tensor's bytes, as `to_raw` gives them
    RAW_ONLY = "raw only"  # raw, and JSON is not acceptable either


def answer_form(accept: str | None) -> Answer:
    """What an Accept header asks for: RAW if it names `application/octet-stream` before any
    JSON type (or `*/*`), RAW_ONLY if it names no JSON type at all, else JSON (also with no
    header, and for types the server does not write: answers have always been JSON).
    q-values are not weighed: the first of the two kinds named wins."""
    for part in (accept or "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in _JSON_OR_ANY:
            return Answer.JSON
        if media == RAW_MEDIA_TYPE:
            rest = (accept or "").lower().split(RAW_MEDIA_TYPE, 1)[1]
            return Answer.RAW if any(kind in rest for kind in _JSON_OR_ANY) else Answer.RAW_ONLY
    return Answer.JSON


def to_raw(output: Any) -> np.ndarray[Any, Any] | None:
    """A tensor or array output as a C-contiguous little-endian numpy array, whose bytes are the
    raw answer (the same layout as a raw request); None for any other output (several
    tensors, bfloat16, a dict): those have only the JSON form."""
    array = _numeric_array(output)
    if array is None:
        return None
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def numel(output: Any) -> int:
    """Number of values in an output (tensors and arrays count their elements), to decide
    whether encoding it is worth a worker thread."""
    if hasattr(output, "numel") and callable(output.numel):
        return int(output.numel())
    if hasattr(output, "size") and isinstance(output.size, int):
        return output.size
    if isinstance(output, Mapping):
        return sum(numel(value) for value in output.values())
    if isinstance(output, list | tuple):
        return sum(numel(item) for item in output)
    return 1


def stack_outputs(outputs: Sequence[Any]) -> dict[str, torch.Tensor]:
    """The outputs of n requests, stacked into batch-first tensors by output name.

    A tensor output is named "output0"; a list or tuple of tensors "output0", "output1", ...;
    a dict of tensors keeps its keys. Raises InferenceFailed if an output is not tensors or
    the requests' outputs differ in names or shapes.
    """
    import torch

    named = [_named_tensors(output) for output in outputs]
    names = list(named[0])
    if any(list(entry) != names for entry in named):
        raise InferenceFailed("the model's outputs differ in names between requests")
    try:
        return {name: torch.stack([entry[name] for entry in named]) for name in names}
    except RuntimeError as exc:
        raise InferenceFailed(f"the model's outputs cannot be stacked: {exc}") from None


def dtype_name(tensor: torch.Tensor) -> str:
    """The tensor's dtype as a name in ITEMSIZE ("float32"), for the protocols' type tags."""
    return str(tensor.dtype).removeprefix("torch.")


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's values as little-endian C-order bytes."""
    import torch

    return bytes(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())


def _named_tensors(output: Any) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(output, torch.Tensor):
        named: dict[str, Any] = {"output0": output}
    elif isinstance(output, list | tuple):
        named = {f"output{i}": item for i, item in enumerate(output)}
    elif isinstance(output, Mapping):
        named = {str(key): value for key, value in output.items()}
    else:
        named = {"output0": output}
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise InferenceFailed(f"the model's output {name!r} is a {type(value).__name__}")
    return named
