"""The inference app: TorchServe's inference API, the Open Inference Protocol, and metrics.

TorchServe routes: `GET /ping`, `POST|PUT /predictions/{model}[/{version}]` with one request
in the body (see `packrat.server.codecs` for the formats) and the model's output as JSON, or
for a TorchServe archive the request as its handler reads it and its answer as TorchServe
writes it (`packrat.server.ts_requests`); the
response's `Server-Timing: compute;dur=MS` header says how long the model computed on the
sub-batch that held the request (its handler's time in the worker).
The v2 routes are in `packrat.server.v2`; `GET /metrics` in `packrat.server.metrics`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from packrat import __version__
from packrat.models.inputs import InputSpec
from packrat.server import codecs, multipart, output_codecs, ts_requests
from packrat.server.api import ModelRepository, ServedModel
from packrat.server.errors import NotAcceptable, Unavailable
from packrat.server.http_admission import AdmissionLimit
from packrat.server.http_auth import TokenAuth
from packrat.server.http_body import read_body
from packrat.server.http_config import HttpConfig
from packrat.server.metrics import Metrics, metrics_router
from packrat.server.prediction_lane import PredictionLane
from packrat.server.responses import ERROR_RESPONSES, JSONBody, install_error_handlers
from packrat.server.v2 import create_v2_router

if TYPE_CHECKING:
    import torch


def create_inference_app(
    repo: ModelRepository, config: HttpConfig | None = None, metrics: Metrics | None = None
) -> FastAPI:
    """The inference app over `repo`.

    `metrics` is shared with the runtime (which records batches, queues and plans) and
    served at `/metrics`; a fresh one is made if None.
    """
    config = config or HttpConfig()
    metrics = metrics or Metrics()
    app = FastAPI(
        title="Packrat inference",
        version=__version__,
        description="TorchServe inference API and the Open Inference Protocol (KServe v2).",
    )
    install_error_handlers(app)
    # Added first, so innermost: predictions pass the token check and the in-flight limit.
    lane_predict = functools.partial(predict, config=config, metrics=metrics)
    app.add_middleware(PredictionLane, repo=repo, predict=lane_predict)
    app.add_middleware(AdmissionLimit, limit=config.max_in_flight)
    if config.token is not None:  # added last: runs first, so strangers are not counted
        app.add_middleware(TokenAuth, token=config.token)
    app.include_router(_torchserve_router(repo, config, metrics))
    app.include_router(create_v2_router(repo, config, metrics))
    app.include_router(metrics_router(metrics))
    return app


def _torchserve_router(repo: ModelRepository, config: HttpConfig, metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["torchserve"], responses=ERROR_RESPONSES)

    @router.get(
        "/ping",
        summary="Health: 200 Healthy when every model is ready (Degraded while a lost instance "
        "is replaced: requests still queue), else 503 Unhealthy",
        responses={503: {"description": '{"status": "Unhealthy"}'}},
    )
    async def ping() -> Response:
        models = repo.models()
        if not all(model.ready for model in models):
            return JSONBody({"status": "Unhealthy"}, status_code=503)
        degraded = sorted({model.name for model in models if model.degraded})
        if degraded:
            return JSONBody({"status": "Degraded", "degraded": degraded})
        return JSONBody({"status": "Healthy"})

    async def predictions(request: Request, model_name: str) -> Response:
        return await predict(request, repo.get(model_name), config, metrics)

    async def predictions_version(request: Request, model_name: str, version: str) -> Response:
        return await predict(request, repo.get(model_name, version), config, metrics)

    # POST, and PUT for `curl -T file`; one route per method keeps OpenAPI operation ids unique.
    for method in ("POST", "PUT"):
        for path, endpoint, summary in (
            ("/predictions/{model_name}", predictions, "Predict (default version)"),
            ("/predictions/{model_name}/{version}", predictions_version, "Predict"),
        ):
            router.add_api_route(
                path,
                endpoint,
                methods=[method],
                summary=summary,
                operation_id=f"{endpoint.__name__}_{method.lower()}",
                response_class=Response,
                responses={
                    200: {
                        "description": "the model's output as JSON (nested lists), or with "
                        "`Accept: application/octet-stream` its raw little-endian bytes, shape "
                        "and dtype in the X-Tensor-Shape and X-Tensor-Dtype headers"
                    }
                },
                openapi_extra=_PREDICTION_BODY_DOC,
            )

    return router


async def predict(
    request: Request, model: ServedModel, config: HttpConfig, metrics: Metrics
) -> Response:
    """`model`'s answer to the TorchServe prediction `request` (the routes' and the lane's)."""
    with metrics.time_request(model.name, model.version):
        if not model.ready:
            raise Unavailable(f"model {model.name!r} is not ready")
        body = await read_body(request, config.max_body_bytes)
        if model.takes_raw_requests:  # a TorchServe archive: its handler reads the request
            reply, compute_s = await model.infer_timed(ts_requests.from_http(request, body))
            response = ts_requests.to_response(reply)
            response.headers["Server-Timing"] = f"compute;dur={compute_s * 1000.0:.3f}"
            return response
        content_type = request.headers.get("content-type")
        if content_type is not None and multipart.is_multipart(content_type):
            # `curl -F data=@x.jpg`: the input field is decoded as if it were the body.
            part = multipart.input_part(multipart.parse_form(content_type, body))
            body, content_type = part.data, part.content_type
        fmt = codecs.body_format(content_type, body, model.input_spec)
        inline = fmt is codecs.BodyFormat.RAW or (
            fmt is not codecs.BodyFormat.IMAGE and len(body) <= config.inline_decode_bytes
        )
        decode_args = (fmt, body, model.input_spec, config.max_image_pixels)
        if inline:
            tensor = _decode(*decode_args)
        else:
            tensor = await run_in_threadpool(_decode, *decode_args)
        output, compute_s = await model.infer_timed(tensor)
        form = output_codecs.answer_form(request.headers.get("accept"))
        if output_codecs.numel(output) > config.inline_encode_values:
            response = await run_in_threadpool(_encode, output, form)
        else:
            response = _encode(output, form)
        # The model's own time, for clients and browsers' developer tools (W3C Server Timing).
        response.headers["Server-Timing"] = f"compute;dur={compute_s * 1000.0:.3f}"
        return response


def _decode(
    fmt: codecs.BodyFormat, body: bytearray, spec: InputSpec | None, max_image_pixels: int
) -> torch.Tensor:
    return codecs.decode(fmt, body, spec, max_image_pixels=max_image_pixels)


def _encode(output: Any, form: output_codecs.Answer) -> Response:
    """The answer in the form asked for: JSON, or the output tensor's raw bytes with its shape
    and dtype in headers (`X-Tensor-Shape: 128,768`, `X-Tensor-Dtype: float32`), which spares
    both sides the JSON of a large output (a hidden state of 98,304 floats: about 1.5 MB of
    text). Raises NotAcceptable if only raw bytes are accepted and the output has no raw form.
    """
    if form is not output_codecs.Answer.JSON:
        array = output_codecs.to_raw(output)
        if array is not None:
            shape = ",".join(str(d) for d in array.shape)
            headers = {"X-Tensor-Shape": shape, "X-Tensor-Dtype": array.dtype.name}
            return Response(
                array.tobytes(), media_type=output_codecs.RAW_MEDIA_TYPE, headers=headers
            )
        if form is output_codecs.Answer.RAW_ONLY:
            raise NotAcceptable(
                f"the answer ({type(output).__name__}) is not one tensor of a plain dtype, so it "
                "has no raw form; accept application/json"
            )
    return JSONBody(output_codecs.to_json(output))


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PREDICTION_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One request. Without a Content-Type the format is sniffed.",
        "content": {
            "application/octet-stream": {
                **_BINARY,
                "description": "raw little-endian tensor bytes of the input's shape and dtype",
            },
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "array", "description": "values nested like the shape, or flat"},
                        {"type": "object", "properties": {"data": {"type": "array"}}},
                    ]
                }
            },
        },
    }
}
