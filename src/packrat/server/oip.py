"""The Open Inference Protocol (KServe v2) without its transport: what HTTP and gRPC share.

`packrat.server.v2` serves the protocol over HTTP/REST and `packrat.server.grpc_service` over
gRPC; both decode their own wire format, then meet here: datatype names, the checks on an
input tensor, its split into requests (an input of shape `[n, *shape]` is n requests, each
submitted to the model on its own so they batch with other clients' requests), the outputs
stacked back, health and metadata. So the two answer the same input the same way, and refuse
the same mistakes with the same messages (as `packrat.server.api`'s errors, which each
transport maps to its own status codes in one place).

Models take one input, named "input0" in metadata (requests may name it anything); outputs
are named as `output_codecs.stack_outputs` says ("output0" for a single tensor).

torch is imported inside the functions that build tensors, as `codecs` does.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from packrat import __version__
from packrat.models.inputs import InputSpec
from packrat.server import codecs, output_codecs
from packrat.server.api import ModelRepository, ServedModel
from packrat.server.errors import BadRequest

if TYPE_CHECKING:
    import torch

#: Protocol datatype -> torch dtype name, for inputs; outputs may also be BOOL.
DATATYPES = {
    "FP64": "float64",
    "FP32": "float32",
    "FP16": "float16",
    "BF16": "bfloat16",
    "INT64": "int64",
    "INT32": "int32",
    "INT16": "int16",
    "INT8": "int8",
    "UINT8": "uint8",
}
#: torch dtype name -> protocol datatype, for outputs and metadata.
OUTPUT_DATATYPES = {dtype: name for name, dtype in DATATYPES.items()} | {"bool": "BOOL"}
INPUT_NAME = "input0"
SERVER_NAME = "packrat"


def server_metadata(extensions: Sequence[str]) -> dict[str, Any]:
    """The server's name, version and the protocol `extensions` its transport serves."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(extensions)}


def not_ready_reason(repo: ModelRepository) -> str | None:
    """Why the server is not ready (models loading, or replacing a lost instance), or None."""
    waiting = sorted({model.name for model in repo.models() if not model.ready})
    if waiting:
        return f"models not ready: {', '.join(waiting)}"
    degraded = sorted({model.name for model in repo.models() if model.degraded})
    if degraded:
        return f"models replacing a lost instance: {', '.join(degraded)}"
    return None


def model_metadata(repo: ModelRepository, model: ServedModel) -> dict[str, Any]:
    """The v2 metadata of `model`, listing every version of its name that `repo` serves."""
    spec = model.input_spec
    inputs = [] if spec is None else [_input_metadata(spec)]
    return {
        "name": model.name,
        "versions": sorted({m.version for m in repo.models() if m.name == model.name}),
        "platform": "packrat",
        "inputs": inputs,
        # ServedModel declares no output spec; the zoo's models return float32 tensors.
        "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1]}],
    }


def _input_metadata(spec: InputSpec) -> dict[str, Any]:
    datatype = OUTPUT_DATATYPES[spec.dtype]
    return {"name": INPUT_NAME, "datatype": datatype, "shape": [-1, *spec.shape]}


def check_tensor_model(model: ServedModel) -> None:
    """BadRequest if `model` takes raw TorchServe requests, which carry no tensors."""
    if model.takes_raw_requests:
        raise BadRequest(
            f"model {model.name!r} is a TorchServe archive served by its own handler: send its "
            f"requests as TorchServe clients do (POST /predictions/{model.name}); the Open "
            "Inference Protocol carries tensors"
        )


def check_batch_size(shape: Sequence[int], max_rows: int) -> None:
    """BadRequest if an input of `shape` holds more than `max_rows` requests."""
    if shape and shape[0] > max_rows:
        raise BadRequest(f"batch size {shape[0]} is over the limit of {max_rows} rows")


def check_input(
    name: str, datatype: str, shape: Sequence[int], spec: InputSpec | None
) -> tuple[str, tuple[int, ...]]:
    """The torch dtype name and shape of input tensor `name`, checked against the model's
    `spec` (None: unknown, anything goes): a known datatype, a batch of >= 1 requests.
    Raises BadRequest naming what is wrong."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise BadRequest(
            f"input {name!r} datatype {datatype!r} is not supported "
            f"(use one of {', '.join(DATATYPES)})"
        )
    dims = tuple(shape)
    if not dims or any(dim < 0 for dim in dims) or dims[0] < 1:
        raise BadRequest(f"input {name!r} shape {list(dims)} needs a batch size >= 1")
    if spec is not None:
        if dtype != spec.dtype:
            raise BadRequest(
                f"input {name!r} is {datatype}; the model takes {OUTPUT_DATATYPES[spec.dtype]}"
            )
        if dims[1:] != spec.shape:
            raise BadRequest(f"input {name!r} shape {list(dims)} is not [n, *{list(spec.shape)}]")
    return dtype, dims


def rows_from_values(
    values: Any, shape: tuple[int, ...], dtype: str, spec: InputSpec | None
) -> list[torch.Tensor]:
    """The requests in a tensor given as values (nested like `shape`, or flat), each owning
    its memory: the runtime may send a request to another process, and a view would drag
    the whole batch along."""
    batch = codecs.tensor_from_data(values, shape, dtype, spec)
    return [row.clone() for row in batch.unbind(0)]


def rows_from_bytes(
    name: str, datatype: str, buffer: memoryview, shape: tuple[int, ...], spec: InputSpec | None
) -> list[torch.Tensor]:
    """The requests in a tensor given as its raw little-endian C-order bytes, each copied
    out of `buffer` (see `rows_from_values`). BadRequest if the size does not match."""
    dtype = DATATYPES[datatype]
    row_bytes = math.prod(shape[1:]) * codecs.ITEMSIZE[dtype]
    if row_bytes * shape[0] != len(buffer):
        raise BadRequest(
            f"input {name!r} is {len(buffer)} bytes; {datatype} {list(shape)} is "
            f"{row_bytes * shape[0]} bytes"
        )
    rows = (buffer[i * row_bytes : (i + 1) * row_bytes] for i in range(shape[0]))
    return [codecs.tensor_from_bytes(row, shape[1:], dtype, spec) for row in rows]


async def infer_all(model: ServedModel, rows: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every row through the model concurrently, the outputs stacked by name (batch first).

    The first failure is raised once all are done, so no result or exception is left
    unobserved."""
    results = await asyncio.gather(*(model.infer(row) for row in rows), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return output_codecs.stack_outputs(list(results))


def select_outputs(
    stacked: Mapping[str, torch.Tensor], wanted: Sequence[str] | None
) -> dict[str, torch.Tensor]:
    """The outputs a request asked for, in its order (None: all); BadRequest for a name the
    model does not return."""
    if wanted is None:
        return dict(stacked)
    unknown = sorted(set(wanted) - set(stacked))
    if unknown:
        raise BadRequest(f"unknown outputs {unknown}; the model returns {sorted(stacked)}")
    return {name: stacked[name] for name in wanted}


def output_datatype(tensor: torch.Tensor) -> str:
    """The protocol datatype of an output tensor (FP32 for a dtype the protocol lacks)."""
    return OUTPUT_DATATYPES.get(output_codecs.dtype_name(tensor), "FP32")
