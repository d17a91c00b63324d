"""The Open Inference Protocol (KServe v2, as Triton serves it) over HTTP/REST.

Health, server and model metadata, and inference with JSON tensors or Triton's binary tensor
extension (the request JSON is followed by raw tensor bytes; header
`Inference-Header-Content-Length` gives the JSON's length), so `tritonclient.http` works as
is, with its default binary data. An infer request with input shape `[n, *shape]` becomes n
requests, each submitted to the model on its own so they batch with other clients'
requests, and their outputs are stacked back into `[n, ...]` tensors.

Models take one input, named "input0" in metadata (requests may name it anything); outputs
are named as `codecs.stack_outputs` says ("output0" for a single tensor).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from packrat import __version__
from packrat.models.inputs import InputSpec
from packrat.server import codecs
from packrat.server.api import BadRequest, ModelRepository, ServedModel, Unavailable
from packrat.server.http_body import read_body
from packrat.server.http_config import HttpConfig
from packrat.server.metrics import Metrics
from packrat.server.responses import ERROR_RESPONSES, JSONBody, json_bytes
from packrat.server.v2_config import EXTENSION as CONFIG_EXTENSION
from packrat.server.v2_config import OutputProbe, create_config_router

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
_OUTPUT_DATATYPES = {dtype: name for name, dtype in DATATYPES.items()} | {"bool": "BOOL"}
INPUT_NAME = "input0"
HEADER_LENGTH = "Inference-Header-Content-Length"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class TensorInput(_Strict):
    """One input tensor: `data` (flat or nested) or `parameters.binary_data_size` bytes."""

    name: str
    shape: list[int] = Field(min_length=1)
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestedOutput(_Strict):
    """An output to return; `parameters.binary_data` picks binary over JSON data."""

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(_Strict):
    """The JSON of an infer request (Open Inference Protocol)."""

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[TensorInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class TensorOutput(BaseModel):
    """One output tensor of a response."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferenceResponse(BaseModel):
    """The JSON of an infer response (documentation only: responses are built directly)."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorOutput]


@dataclass(frozen=True)
class _Batch:
    """A parsed infer request: its id, the requests it holds, the outputs to return."""

    id: str | None
    rows: list[torch.Tensor]
    outputs: dict[str, bool] | None  # name -> binary; None: all, binary if `binary_default`
    binary_default: bool


def create_v2_router(repo: ModelRepository, config: HttpConfig, metrics: Metrics) -> APIRouter:
    """The v2 routes over `repo`, recording inference requests in `metrics`."""
    router = APIRouter(prefix="/v2", tags=["v2"], responses=ERROR_RESPONSES)
    probe = OutputProbe()  # what each model returns, for metadata and configuration

    @router.get("", summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        extensions = ["binary_tensor_data", CONFIG_EXTENSION]
        return {"name": "packrat", "version": __version__, "extensions": extensions}

    @router.get("/health/live", summary="Liveness: 200 while the server runs")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get(
        "/health/ready",
        summary="Readiness: 200 when every model is ready, else 503 (also while a model "
        "replaces a lost instance)",
    )
    async def ready() -> dict[str, bool]:
        waiting = sorted({model.name for model in repo.models() if not model.ready})
        if waiting:
            raise Unavailable(f"models not ready: {', '.join(waiting)}")
        degraded = sorted({model.name for model in repo.models() if model.degraded})
        if degraded:
            raise Unavailable(f"models replacing a lost instance: {', '.join(degraded)}")
        return {"ready": True}

    @router.get("/models/{model_name}", summary="Model metadata")
    async def model_metadata(model_name: str) -> dict[str, Any]:
        return await with_outputs(repo.get(model_name))

    @router.get("/models/{model_name}/versions/{version}", summary="Model version metadata")
    async def version_metadata(model_name: str, version: str) -> dict[str, Any]:
        return await with_outputs(repo.get(model_name, version))

    async def with_outputs(model: ServedModel) -> dict[str, Any]:
        # The outputs the model returns, named as the configuration names them.
        metadata = model_metadata_of(repo, model)
        metadata["outputs"] = [output.metadata() for output in await probe.outputs(model)]
        return metadata

    @router.get("/models/{model_name}/ready", summary="Model readiness: 200, or 503")
    async def model_ready(model_name: str) -> dict[str, Any]:
        return _readiness(repo.get(model_name))

    @router.get("/models/{model_name}/versions/{version}/ready", summary="Version readiness")
    async def version_ready(model_name: str, version: str) -> dict[str, Any]:
        return _readiness(repo.get(model_name, version))

    async def run(request: Request, model: ServedModel) -> Response:
        with metrics.time_request(model.name):
            if not model.ready:
                raise Unavailable(f"model {model.name!r} is not ready")
            body = await read_body(request, config.max_body_bytes)
            header_length = _header_length(request.headers.get(HEADER_LENGTH), len(body))
            args = (body, header_length, model.input_spec, config.max_infer_rows)
            if len(body) > config.inline_decode_bytes:
                batch = await run_in_threadpool(_parse, *args)
            else:
                batch = _parse(*args)
            stacked = codecs.stack_outputs(await _infer_all(model, batch.rows))
            if sum(t.numel() for t in stacked.values()) > config.inline_encode_values:
                return await run_in_threadpool(_respond, model, batch, stacked)
            return _respond(model, batch, stacked)

    @router.post("/models/{model_name}/infer", **_INFER_DOCS)
    async def infer(request: Request, model_name: str) -> Response:
        return await run(request, repo.get(model_name))

    @router.post("/models/{model_name}/versions/{version}/infer", **_INFER_DOCS)
    async def infer_version(request: Request, model_name: str, version: str) -> Response:
        return await run(request, repo.get(model_name, version))

    router.include_router(create_config_router(repo, probe))
    return router


def _readiness(model: ServedModel) -> dict[str, Any]:
    if not model.ready:
        raise Unavailable(f"model {model.name!r} version {model.version!r} is not ready")
    return {"name": model.name, "version": model.version, "ready": True}


def model_metadata_of(repo: ModelRepository, model: ServedModel) -> dict[str, Any]:
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
    datatype = _OUTPUT_DATATYPES[spec.dtype]
    return {"name": INPUT_NAME, "datatype": datatype, "shape": [-1, *spec.shape]}


def _header_length(value: str | None, body_length: int) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise BadRequest(f"{HEADER_LENGTH} {value!r} is not an integer") from None
    if not 0 < length <= body_length:
        raise BadRequest(f"{HEADER_LENGTH} {length} is not within the {body_length}-byte body")
    return length


def _parse(
    body: bytearray, header_length: int | None, spec: InputSpec | None, max_rows: int
) -> _Batch:
    """The requests in an infer body (JSON, then binary tensor data if `header_length`),
    at most `max_rows` of them."""
    view = memoryview(body)
    header = body if header_length is None else bytes(view[:header_length])
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise BadRequest(f"invalid infer request: {_validation_problems(exc)}") from None
    if len(request.inputs) != 1:
        names = [tensor.name for tensor in request.inputs]
        raise BadRequest(f"the model takes one input tensor, got {len(names)}: {names}")
    tensor = request.inputs[0]
    binary = view[header_length:] if header_length is not None else None
    if tensor.shape and tensor.shape[0] > max_rows:
        raise BadRequest(f"batch size {tensor.shape[0]} is over the limit of {max_rows} rows")
    rows = _rows(tensor, binary, spec)
    outputs = None
    if request.outputs is not None:
        outputs = {out.name: _flag(out.parameters, "binary_data") for out in request.outputs}
    return _Batch(request.id, rows, outputs, _flag(request.parameters, "binary_data_output"))


def _rows(
    tensor: TensorInput, binary: memoryview | None, spec: InputSpec | None
) -> list[torch.Tensor]:
    """The input tensor split into its requests, each owning its memory: the runtime may
    send a request to another process, and a view would drag the whole batch along."""
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise BadRequest(
            f"input {tensor.name!r} datatype {tensor.datatype!r} is not supported "
            f"(use one of {', '.join(DATATYPES)})"
        )
    shape = tuple(tensor.shape)
    if any(dim < 0 for dim in shape) or shape[0] < 1:
        raise BadRequest(f"input {tensor.name!r} shape {list(shape)} needs a batch size >= 1")
    if spec is not None:
        if dtype != spec.dtype:
            raise BadRequest(
                f"input {tensor.name!r} is {tensor.datatype}; the model takes "
                f"{_OUTPUT_DATATYPES[spec.dtype]}"
            )
        if shape[1:] != spec.shape:
            raise BadRequest(
                f"input {tensor.name!r} shape {list(shape)} is not [n, *{list(spec.shape)}]"
            )
    size = tensor.parameters.get("binary_data_size")
    if size is None:
        if tensor.data is None:
            raise BadRequest(f"input {tensor.name!r} has neither data nor binary_data_size")
        batch = codecs.tensor_from_data(tensor.data, shape, dtype, spec)
        return [row.clone() for row in batch.unbind(0)]
    if binary is None or not isinstance(size, int) or isinstance(size, bool):
        raise BadRequest(
            f"input {tensor.name!r} has binary_data_size but the request has no "
            f"{HEADER_LENGTH} header, or the size is not an integer"
        )
    if size != len(binary):
        raise BadRequest(f"binary_data_size {size} != the {len(binary)} bytes after the JSON")
    row_bytes = math.prod(shape[1:]) * codecs.ITEMSIZE[dtype]
    if row_bytes * shape[0] != size:
        raise BadRequest(
            f"input {tensor.name!r} is {size} bytes; {tensor.datatype} {list(shape)} is "
            f"{row_bytes * shape[0]} bytes"
        )
    rows = (binary[i * row_bytes : (i + 1) * row_bytes] for i in range(shape[0]))
    return [codecs.tensor_from_bytes(row, shape[1:], dtype, spec) for row in rows]


async def _infer_all(model: ServedModel, rows: Sequence[torch.Tensor]) -> list[Any]:
    """Every row through the model concurrently; the first failure is raised once all are
    done, so no result or exception is left unobserved."""
    results = await asyncio.gather(*(model.infer(row) for row in rows), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)


def _respond(model: ServedModel, batch: _Batch, stacked: dict[str, torch.Tensor]) -> Response:
    wanted = batch.outputs if batch.outputs is not None else dict.fromkeys(stacked)
    unknown = sorted(set(wanted) - set(stacked))
    if unknown:
        raise BadRequest(f"unknown outputs {unknown}; the model returns {sorted(stacked)}")
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in wanted.items():
        tensor = stacked[name]
        entry: dict[str, Any] = {
            "name": name,
            "datatype": _OUTPUT_DATATYPES.get(codecs.dtype_name(tensor), "FP32"),
            "shape": list(tensor.shape),
        }
        if binary or (batch.outputs is None and batch.binary_default):
            chunks.append(codecs.tensor_bytes(tensor))
            entry["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            entry["data"] = codecs.to_json(tensor.reshape(-1))
        outputs.append(entry)
    content: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if batch.id is not None:
        content["id"] = batch.id
    content["outputs"] = outputs
    if not chunks:
        return JSONBody(content)
    header = json_bytes(content)
    return Response(
        b"".join([header, *chunks]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _flag(parameters: dict[str, Any], key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key!r} must be true or false, got {value!r}")
    return value


def _validation_problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )


_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "values, flat or nested like shape"},
    },
}
_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
_INFER_DOCS: dict[str, Any] = {
    "summary": "Inference on a batch of requests",
    "response_class": Response,
    "responses": {200: {"model": InferenceResponse}},
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _REQUEST_SCHEMA},
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": f"the JSON request, then tensor bytes; {HEADER_LENGTH} "
                    "gives the JSON's length",
                },
            },
        }
    },
}
