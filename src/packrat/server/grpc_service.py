"""The Open Inference Protocol (KServe v2) over gRPC: `inference.GRPCInferenceService`.

Serves the protocol's six RPCs with the same semantics as the HTTP routes
(`packrat.server.v2`; both go through `packrat.server.oip`): ServerLive, ServerReady,
ModelReady, ServerMetadata, ModelMetadata and ModelInfer, whose input of shape `[n, *shape]`
is n requests, each submitted to the model on its own so they batch with other clients'
requests, with the outputs stacked back (`packrat.server.grpc_messages`). Triton's
`grpc_service.proto` extends the same service with the same messages, so
`tritonclient.grpc`'s `infer`, `async_infer`, `is_server_live`, `is_server_ready`,
`is_model_ready`, `get_server_metadata` and `get_model_metadata` work as is. Triton's other
RPCs (ModelConfig, ModelStatistics, ModelStreamInfer, the repository, shared-memory, trace
and log RPCs) get UNIMPLEMENTED with a message naming what to use instead.

As over HTTP: with an API token, every RPC but ServerLive and ServerReady needs the metadata
`authorization: Bearer <token>` (else UNAUTHENTICATED); at most `HttpConfig.max_in_flight`
ModelInfer calls are in progress at once over gRPC (more get UNAVAILABLE at once, with
`retry-after: 1`); requests are recorded in the same metrics. Errors become status codes in
`packrat.server.grpc_status`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from packrat.server import grpc_messages, oip
from packrat.server.api import ModelRepository
from packrat.server.errors import Unavailable
from packrat.server.grpc_status import abort
from packrat.server.grpc_v2 import grpc_predict_v2_pb2 as pb
from packrat.server.http_config import HttpConfig
from packrat.server.metrics import Metrics

SERVICE = "inference.GRPCInferenceService"
RETRY_AFTER_S = 1
#: The health checks need no token, like HTTP's.
OPEN_RPCS = frozenset({"ServerLive", "ServerReady"})
#: What to use instead of Triton's RPCs that Packrat does not serve.
INSTEAD = {
    "ModelStreamInfer": "call ModelInfer (tritonclient: infer or async_infer)",
    "ModelConfig": "the HTTP inference port serves it: GET /v2/models/{name}/config",
    "ModelStatistics": "Prometheus metrics are served on the metrics port: GET /metrics",
    "RepositoryIndex": "the management API lists models: GET /models",
    "RepositoryModelLoad": "the management API registers models: POST /models?url=...",
    "RepositoryModelUnload": "the management API unregisters models: DELETE /models/{name}",
}

Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpc ships no type hints
Rpc = Callable[[Any, Context], Awaitable[Any]]


def create_grpc_handlers(
    repo: ModelRepository, config: HttpConfig, metrics: Metrics
) -> list[grpc.GenericRpcHandler]:
    """The handlers of the service over `repo` (see the module docstring), for
    `grpc.aio.Server.add_generic_rpc_handlers`."""
    service = _Service(repo, config, metrics)
    rpcs: dict[str, tuple[type[Any], Rpc]] = {
        "ServerLive": (pb.ServerLiveRequest, service.server_live),
        "ServerReady": (pb.ServerReadyRequest, service.server_ready),
        "ModelReady": (pb.ModelReadyRequest, service.model_ready),
        "ServerMetadata": (pb.ServerMetadataRequest, service.server_metadata),
        "ModelMetadata": (pb.ModelMetadataRequest, service.model_metadata),
        "ModelInfer": (pb.ModelInferRequest, service.model_infer),
    }
    guard = _Guard(config.token)
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            guard.wrap(rpc, open_=name in OPEN_RPCS),
            request_deserializer=message.FromString,
            response_serializer=_serialize,
        )
        for name, (message, rpc) in rpcs.items()
    }
    return [grpc.method_handlers_generic_handler(SERVICE, handlers), _NotServed(tuple(rpcs))]


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


class _Service:
    """The RPCs themselves: request message in, response message out, ServerError raised."""

    def __init__(self, repo: ModelRepository, config: HttpConfig, metrics: Metrics) -> None:
        self._repo = repo
        self._config = config
        self._metrics = metrics
        self.in_flight = 0

    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> Any:
        return pb.ServerReadyResponse(ready=oip.not_ready_reason(self._repo) is None)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> Any:
        model = self._repo.get(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=model.ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> Any:
        return grpc_messages.server_metadata()

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> Any:
        model = self._repo.get(request.name, request.version or None)
        return grpc_messages.model_metadata(oip.model_metadata(self._repo, model))

    async def model_infer(self, request: pb.ModelInferRequest, context: Context) -> Any:
        limit = self._config.max_in_flight
        if self.in_flight >= limit:
            raise Unavailable(
                f"the server is at its limit of {limit} gRPC requests in progress",
                retry_after_s=RETRY_AFTER_S,
            )
        self.in_flight += 1
        try:
            return await self._infer(request)
        finally:
            self.in_flight -= 1

    async def _infer(self, request: pb.ModelInferRequest) -> Any:
        model = self._repo.get(request.model_name, request.model_version or None)
        with self._metrics.time_request(model.name):
            if not model.ready:
                raise Unavailable(f"model {model.name!r} is not ready")
            oip.check_tensor_model(model)
            args = (request, model.input_spec, self._config.max_infer_rows)
            # Raw bytes are wrapped, not parsed; many typed values take a while to check.
            if request.raw_input_contents or request.ByteSize() <= self._config.inline_decode_bytes:
                batch = grpc_messages.parse_infer(*args)
            else:
                batch = await asyncio.to_thread(grpc_messages.parse_infer, *args)
            stacked = await oip.infer_all(model, batch.rows)
            return grpc_messages.infer_response(model, batch, stacked)


class _Guard:
    """Wraps each RPC: the token check, and every exception turned into a status."""

    def __init__(self, token: str | None) -> None:
        self._expected = None if token is None else b"Bearer " + token.encode()

    def wrap(self, rpc: Rpc, *, open_: bool) -> Rpc:
        async def guarded(request: Any, context: Context) -> Any:
            if not open_ and self._expected is not None:
                await _check_token(context, self._expected)
            try:
                return await rpc(request, context)
            except Exception as exc:
                await abort(context, exc)

        return guarded


async def _check_token(context: Context, expected: bytes) -> None:
    """Ends the call with UNAUTHENTICATED unless its metadata carries the token."""
    given = next(
        (str(v) for k, v in context.invocation_metadata() or () if k == "authorization"), ""
    )
    if hmac.compare_digest(given.encode(), expected):
        return
    why = "a bearer token is required" if not given else "the bearer token is wrong"
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        f"{why}: send the metadata 'authorization: Bearer <token>'",
    )


class _NotServed(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no types
    """Triton's RPCs beyond the protocol: UNIMPLEMENTED, saying what to use instead."""

    def __init__(self, served: tuple[str, ...]) -> None:
        self._served = served

    def service(self, handler_call_details: Any) -> Any:
        service, _, name = str(handler_call_details.method).lstrip("/").partition("/")
        if service != SERVICE:
            return None  # grpc answers UNIMPLEMENTED "Method not found!"
        message = (
            f"{name} is not served: Packrat serves the Open Inference Protocol's RPCs "
            f"({', '.join(self._served)}), not Triton's extensions"
        )
        if name in INSTEAD:
            message += f"; {INSTEAD[name]}"

        async def refuse(requests: Any, context: Context) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        # Streaming on both sides, so it answers unary and streaming calls alike at once.
        return grpc.stream_stream_rpc_method_handler(refuse)
