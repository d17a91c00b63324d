"""The Open Inference Protocol (KServe v2, as Triton serves it) over HTTP/REST.

Health, server and model metadata, and inference with JSON tensors or Triton's binary tensor
extension (the request JSON is followed by raw tensor bytes; header
`Inference-Header-Content-Length` gives the JSON's length), so `tritonclient.http` works as
is, with its default binary data. An infer request with input shape `[n, *shape]` becomes n
requests, each submitted to the model on its own so they batch with other clients'
requests, and their outputs are stacked back into `[n, ...]` tensors.

What HTTP and gRPC share (datatypes, checks, the split into requests, metadata) is in
`packrat.server.oip`; this module decodes and encodes the HTTP forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from packrat.models.inputs import InputSpec
from packrat.server import oip, output_codecs
from packrat.server.api import ModelRepository, ServedModel
from packrat.server.errors import BadRequest, Unavailable
from packrat.server.http_body import read_body
from packrat.server.http_config import HttpConfig
from packrat.server.metrics import Metrics
from packrat.server.responses import ERROR_RESPONSES, JSONBody, json_bytes
from packrat.server.v2_config import EXTENSION as CONFIG_EXTENSION
from packrat.server.v2_config import OutputProbe, create_config_router

if TYPE_CHECKING:
    import torch

DATATYPES = oip.DATATYPES
INPUT_NAME = oip.INPUT_NAME
model_metadata_of = oip.model_metadata
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
        return oip.server_metadata(["binary_tensor_data", CONFIG_EXTENSION])

    @router.get("/health/live", summary="Liveness: 200 while the server runs")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get(
        "/health/ready",
        summary="Readiness: 200 when every model is ready, else 503 (also while a model "
        "replaces a lost instance)",
    )
    async def ready() -> dict[str, bool]:
        reason = oip.not_ready_reason(repo)
        if reason is not None:
            raise Unavailable(reason)
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
        with metrics.time_request(model.name, model.version):
            if not model.ready:
                raise Unavailable(f"model {model.name!r} is not ready")
            oip.check_tensor_model(model)
            body = await read_body(request, config.max_body_bytes)
            header_length = _header_length(request.headers.get(HEADER_LENGTH), len(body))
            args = (body, header_length, model.input_spec, config.max_infer_rows)
            if len(body) > config.inline_decode_bytes:
                batch = await run_in_threadpool(_parse, *args)
            else:
                batch = _parse(*args)
            stacked = await oip.infer_all(model, batch.rows)
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
    oip.check_batch_size(tensor.shape, max_rows)
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
    dtype, shape = oip.check_input(tensor.name, tensor.datatype, tensor.shape, spec)
    size = tensor.parameters.get("binary_data_size")
    if size is None:
        if tensor.data is None:
            raise BadRequest(f"input {tensor.name!r} has neither data nor binary_data_size")
        return oip.rows_from_values(tensor.data, shape, dtype, spec)
    if binary is None or not isinstance(size, int) or isinstance(size, bool):
        raise BadRequest(
            f"input {tensor.name!r} has binary_data_size but the request has no "
            f"{HEADER_LENGTH} header, or the size is not an integer"
        )
    if size != len(binary):
        raise BadRequest(f"binary_data_size {size} != the {len(binary)} bytes after the JSON")
    return oip.rows_from_bytes(tensor.name, tensor.datatype, binary, shape, spec)


def _respond(model: ServedModel, batch: _Batch, stacked: dict[str, torch.Tensor]) -> Response:
    wanted = None if batch.outputs is None else list(batch.outputs)
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, tensor in oip.select_outputs(stacked, wanted).items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": oip.output_datatype(tensor),
            "shape": list(tensor.shape),
        }
        binary = batch.binary_default if batch.outputs is None else batch.outputs[name]
        if binary:
            chunks.append(output_codecs.tensor_bytes(tensor))
            entry["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            entry["data"] = output_codecs.to_json(tensor.reshape(-1))
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
