"""KServe v2 over gRPC without `packrat serve`: status codes, messages to requests and back,
and the service itself on a real port over fake models (tests/fixtures/server_fakes.py)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from packrat.errors import PackratError
from packrat.models.inputs import InputSpec
from packrat.server import grpc_messages
from packrat.server.errors import (
    BadRequest,
    Conflict,
    InferenceFailed,
    NotFound,
    PayloadTooLarge,
    ServerError,
    Unavailable,
    UnsupportedMediaType,
)
from packrat.server.grpc_listen import GrpcServer, bind_grpc
from packrat.server.grpc_service import SERVICE, create_grpc_handlers
from packrat.server.grpc_status import status_code
from packrat.server.grpc_v2 import grpc_predict_v2_pb2 as pb
from packrat.server.http_config import HttpConfig
from packrat.server.launch_config import LaunchConfig, load_config_file, with_cli
from packrat.server.metrics import Metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FAIL_MARKER, FLOAT3, FakeModel, FakeRepository  # noqa: E402

TOKENS = InputSpec((4,), "int64", low=0, high=50)
TOKEN = "grpc-test-token-0123456789"
Code = grpc.StatusCode


class NoSuchVersion(NotFound):
    """A subclass takes its ancestor's code."""


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequest("x"), Code.INVALID_ARGUMENT),
        (UnsupportedMediaType("x"), Code.INVALID_ARGUMENT),
        (NotFound("x"), Code.NOT_FOUND),
        (NoSuchVersion("x"), Code.NOT_FOUND),
        (Conflict("x"), Code.ALREADY_EXISTS),
        (PayloadTooLarge("x"), Code.RESOURCE_EXHAUSTED),
        (Unavailable("x"), Code.UNAVAILABLE),
        (InferenceFailed("x"), Code.INTERNAL),
        (ServerError("x"), Code.INTERNAL),
    ],
)
def test_errors_map_to_status_codes_by_class(error: ServerError, code: grpc.StatusCode) -> None:
    assert status_code(error) == code


def infer_request(
    x: np.ndarray[Any, Any] | None = None, datatype: str = "FP32", **fields: Any
) -> pb.ModelInferRequest:
    """A request for model "double" with `x` as raw contents (or only `fields`)."""
    request = pb.ModelInferRequest(model_name="double", **fields)
    if x is not None:
        request.inputs.add(name="x", datatype=datatype, shape=list(x.shape))
        request.raw_input_contents.append(x.tobytes())
    return request


def typed_request(shape: list[int], datatype: str, **contents: list[Any]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="double")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    tensor.contents.CopyFrom(pb.InferTensorContents(**contents))
    return request


def test_raw_input_is_one_request_per_row_each_owning_its_memory() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    batch = grpc_messages.parse_infer(infer_request(x, id="r1"), FLOAT3, max_rows=8)
    assert batch.id == "r1" and batch.outputs is None
    assert [row.tolist() for row in batch.rows] == x.tolist()
    assert all(row.dtype == torch.float32 and row.shape == (3,) for row in batch.rows)
    assert batch.rows[0].untyped_storage().nbytes() == 12  # not a view of the whole batch


@pytest.mark.parametrize(
    ("request_", "spec", "expected"),
    [
        (typed_request([2, 3], "FP32", fp32_contents=[1, 2, 3, 4, 5, 6]), FLOAT3, [[1, 2, 3]]),
        (typed_request([1, 4], "INT64", int64_contents=[1, 2, 3, 49]), TOKENS, [[1, 2, 3, 49]]),
        (typed_request([1, 2], "INT32", int_contents=[-5, 7]), None, [[-5, 7]]),
        (typed_request([1, 2], "UINT8", uint_contents=[0, 255]), None, [[0, 255]]),
        (typed_request([1, 1], "FP64", fp64_contents=[0.5]), None, [[0.5]]),
    ],
    ids=["fp32", "int64", "int32", "uint8", "fp64"],
)
def test_typed_contents_decode_like_raw(
    request_: pb.ModelInferRequest, spec: InputSpec | None, expected: list[list[float]]
) -> None:
    rows = grpc_messages.parse_infer(request_, spec, max_rows=8).rows
    assert [row.tolist() for row in rows][: len(expected)] == expected
    dtype = {"FP32": "float32", "INT64": "int64", "INT32": "int32", "UINT8": "uint8"}
    datatype = request_.inputs[0].datatype
    assert str(rows[0].dtype) == f"torch.{dtype.get(datatype, 'float64')}"


def two_inputs() -> pb.ModelInferRequest:
    request = infer_request(np.zeros((1, 3), np.float32))
    request.inputs.add(name="y", datatype="FP32", shape=[1, 3])
    return request


def raw_and_typed() -> pb.ModelInferRequest:
    request = infer_request(np.zeros((1, 3), np.float32))
    request.inputs[0].contents.fp32_contents.extend([1, 2, 3])
    return request


def two_raw_buffers() -> pb.ModelInferRequest:
    request = infer_request(np.zeros((1, 3), np.float32))
    request.raw_input_contents.append(b"\0" * 12)
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (two_inputs(), "the model takes one input tensor, got 2"),
        (two_raw_buffers(), "raw_input_contents holds 2 tensors; the request has 1 input"),
        (raw_and_typed(), "has both contents and raw_input_contents"),
        (typed_request([1, 3], "FP32", int_contents=[1, 2, 3]), "found int_contents"),
        (typed_request([1, 3], "FP32"), "send its values in contents.fp32_contents"),
        (typed_request([1, 3], "FP32", fp32_contents=[1, 2]), "expected [1, 3]"),
        (typed_request([1, 3], "FP32", fp32_contents=[1, 2, float("nan")]), "NaN"),
        (infer_request(np.zeros((1, 2), np.float32)), "shape [1, 2] is not [n, *[3]]"),
        (infer_request(np.zeros((1, 3), np.float64), "FP64"), "the model takes FP32"),
        (infer_request(np.zeros((1, 3), np.float32), "BYTES"), "datatype 'BYTES' is not"),
        (infer_request(np.zeros((9, 3), np.float32)), "batch size 9 is over the limit of 8"),
        (infer_request(np.zeros((0, 3), np.float32)), "needs a batch size >= 1"),
        (infer_request(np.zeros((1, 6), np.float16), "FP32"), "is not [n, *[3]]"),
    ],
)
def test_malformed_requests_say_what_is_wrong(request_: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        grpc_messages.parse_infer(request_, FLOAT3, max_rows=8)


def test_half_floats_travel_raw_only() -> None:
    request = typed_request([1, 3], "FP16", fp32_contents=[1, 2, 3])
    half = InputSpec((3,), "float16")
    with pytest.raises(BadRequest, match="FP16, which has no typed contents"):
        grpc_messages.parse_infer(request, half, max_rows=8)
    raw = grpc_messages.parse_infer(infer_request(np.ones((1, 3), np.float16), "FP16"), half, 8)
    assert raw.rows[0].dtype == torch.float16 and raw.rows[0].tolist() == [1, 1, 1]


def test_raw_size_must_match_shape() -> None:
    request = infer_request(np.zeros((2, 3), np.float32))
    request.raw_input_contents[0] = b"\0" * 20
    with pytest.raises(BadRequest, match=r"is 20 bytes; FP32 \[2, 3\] is 24 bytes"):
        grpc_messages.parse_infer(request, None, max_rows=8)


def test_integer_values_are_checked_against_the_models_range() -> None:
    request = typed_request([1, 4], "INT64", int64_contents=[1, 2, 3, 50])
    with pytest.raises(BadRequest, match=r"must lie in \[0, 50\)"):
        grpc_messages.parse_infer(request, TOKENS, max_rows=8)


def test_outputs_come_back_raw_in_the_order_asked() -> None:
    model = FakeModel("double", "3")
    request = infer_request(np.zeros((2, 3), np.float32), id="r9")
    for name in ("b", "a", "b"):
        request.outputs.add(name=name)
    batch = grpc_messages.parse_infer(request, FLOAT3, max_rows=8)
    assert batch.outputs == ["b", "a"]
    stacked = {"a": torch.ones(2, 3), "b": torch.tensor([[True], [False]])}
    response = grpc_messages.infer_response(model, batch, stacked)
    assert (response.model_name, response.model_version, response.id) == ("double", "3", "r9")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("b", "BOOL", [2, 1]),
        ("a", "FP32", [2, 3]),
    ]
    assert response.raw_output_contents[0] == b"\x01\x00"
    assert np.frombuffer(response.raw_output_contents[1], np.float32).tolist() == [1.0] * 6
    with pytest.raises(BadRequest, match=r"unknown outputs \['c'\]; the model returns"):
        grpc_messages.infer_response(
            model, grpc_messages.InferBatch("", [], ["c"]), {"a": torch.ones(1)}
        )


@dataclass
class Running:
    address: str
    server: GrpcServer
    loop: asyncio.AbstractEventLoop

    def stop(self, grace_s: float) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace_s), self.loop).result(timeout=30)


@contextmanager
def running_service(repo: FakeRepository, config: HttpConfig) -> Iterator[Running]:
    """The service over `repo` on a free port, on an event loop of its own thread."""
    loop = asyncio.new_event_loop()

    async def start() -> Any:
        server = bind_grpc("127.0.0.1", 0, max_message_bytes=config.max_body_bytes)
        await server.start(create_grpc_handlers(repo, config, Metrics()))
        return server

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield Running(server.address, server, loop)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class Client:
    """Calls the service's RPCs by name with this package's messages."""

    def __init__(self, address: str, token: str | None = None) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(address)
        self.metadata = None if token is None else (("authorization", f"Bearer {token}"),)

    def rpc(self, name: str, response: type[Any]) -> Any:
        return self.channel.unary_unary(
            f"/{SERVICE}/{name}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response.FromString,
        )

    def __call__(self, name: str, request: Any, response: type[Any] = pb.ServerLiveResponse) -> Any:
        return self.rpc(name, response)(request, metadata=self.metadata, timeout=10)

    def error(self, name: str, request: Any) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            self(name, request)
        return caught.value


@pytest.fixture(scope="module")
def repo() -> FakeRepository:
    return FakeRepository(
        FakeModel("double", "1", delay_s=0.01),
        FakeModel("double", "2"),
        FakeModel("bert", "1", TOKENS),
        FakeModel("loading", "1", ready=False),
        FakeModel("anything", "1", None),
    )


@pytest.fixture(scope="module")
def client(repo: FakeRepository) -> Iterator[Client]:
    config = HttpConfig(max_infer_rows=100, token=TOKEN)
    with running_service(repo, config) as running:
        yield Client(running.address, TOKEN)


def test_health_readiness_and_metadata(client: Client) -> None:
    assert client("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
    assert not client("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
    ready = client.rpc("ModelReady", pb.ModelReadyResponse)
    assert ready(pb.ModelReadyRequest(name="double"), metadata=client.metadata).ready
    assert not ready(pb.ModelReadyRequest(name="loading"), metadata=client.metadata).ready
    server = client("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse)
    assert server.name == "packrat" and server.version
    metadata = client(
        "ModelMetadata", pb.ModelMetadataRequest(name="bert"), pb.ModelMetadataResponse
    )
    assert (metadata.name, list(metadata.versions), metadata.platform) == ("bert", ["1"], "packrat")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input0", "INT64", [-1, 4])
    ]
    error = client.error("ModelMetadata", pb.ModelMetadataRequest(name="nope"))
    assert error.code() == Code.NOT_FOUND and "'nope'" in str(error.details())


def test_infer_raw_and_typed_give_the_same_answer(client: Client) -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    infer = client.rpc("ModelInfer", pb.ModelInferResponse)
    raw = infer(infer_request(x, model_version="2"), metadata=client.metadata)
    typed = infer(
        typed_request([4, 3], "FP32", fp32_contents=x.reshape(-1).tolist()),
        metadata=client.metadata,
    )
    for response in (raw, typed):
        assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
            ("output0", "FP32", [4, 3])
        ]
        answer = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(4, 3)
        np.testing.assert_array_equal(answer, x * 2)
    assert raw.model_version == "2" and typed.model_version == "1"


def test_many_typed_values_decode_off_the_event_loop_alike(client: Client) -> None:
    values = np.linspace(-1, 1, 20_000, dtype=np.float32)  # 80 kB: over inline_decode_bytes
    request = typed_request([1, values.size], "FP32", fp32_contents=values.tolist())
    request.model_name = "anything"
    response = client("ModelInfer", request, pb.ModelInferResponse)
    np.testing.assert_array_equal(
        np.frombuffer(response.raw_output_contents[0], np.float32), values * 2
    )


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.ModelInferRequest(model_name="nope"), Code.NOT_FOUND, "'nope'"),
        (infer_request(np.zeros((1, 2), np.float32)), Code.INVALID_ARGUMENT, "is not [n, *[3]]"),
        (
            infer_request(np.full((2, 3), FAIL_MARKER, np.float32)),
            Code.INTERNAL,
            "fake model failed on the marker",
        ),
        (pb.ModelInferRequest(model_name="loading"), Code.UNAVAILABLE, "is not ready"),
    ],
    ids=["unknown-model", "bad-shape", "model-failed", "not-ready"],
)
def test_infer_errors_have_their_status(
    client: Client, request_: pb.ModelInferRequest, code: grpc.StatusCode, message: str
) -> None:
    error = client.error("ModelInfer", request_)
    assert error.code() == code and message in str(error.details())


def test_a_refused_request_says_when_to_retry(client: Client, repo: FakeRepository) -> None:
    model = repo.get("double", "2")
    model.refusal = Unavailable("queue full", retry_after_s=1)
    try:
        error = client.error(
            "ModelInfer", infer_request(np.zeros((1, 3), np.float32), model_version="2")
        )
    finally:
        model.refusal = None
    assert error.code() == Code.UNAVAILABLE and error.details() == "queue full"
    assert ("retry-after", "1") in tuple(error.trailing_metadata() or ())


def test_a_message_over_the_body_limit_is_refused_by_grpc(client: Client) -> None:
    too_big = infer_request(np.zeros((1, 3), np.float32))
    too_big.raw_input_contents[0] = b"\0" * (HttpConfig().max_body_bytes + 1)
    assert client.error("ModelInfer", too_big).code() == Code.RESOURCE_EXHAUSTED


def test_triton_only_rpcs_are_unimplemented_with_a_hint(client: Client) -> None:
    error = client.error("ModelConfig", pb.ModelMetadataRequest(name="double"))
    assert error.code() == Code.UNIMPLEMENTED
    assert "ModelConfig is not served" in str(error.details())
    assert "GET /v2/models/{name}/config" in str(error.details())
    stream = client.channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")
    with pytest.raises(grpc.RpcError) as streamed:
        list(stream(iter([b""]), metadata=client.metadata, timeout=10))
    assert streamed.value.code() == Code.UNIMPLEMENTED
    assert "call ModelInfer" in str(streamed.value.details())
    with pytest.raises(grpc.RpcError) as other:
        client.channel.unary_unary("/other.Service/Call")(b"", timeout=10)
    assert other.value.code() == Code.UNIMPLEMENTED


def test_token_guards_all_but_health(client: Client) -> None:
    stranger = Client(client.address)
    assert stranger("ServerLive", pb.ServerLiveRequest()).live
    error = stranger.error("ModelMetadata", pb.ModelMetadataRequest(name="double"))
    assert error.code() == Code.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in str(error.details())
    wrong = Client(client.address, "x" * 20)
    assert "is wrong" in str(wrong.error("ModelInfer", pb.ModelInferRequest()).details())


def test_in_flight_calls_beyond_the_limit_are_refused_at_once() -> None:
    repo = FakeRepository(FakeModel("double", "1", delay_s=0.5))
    with running_service(repo, HttpConfig(max_in_flight=1)) as running:
        infer = Client(running.address).rpc("ModelInfer", pb.ModelInferResponse)
        first = infer.future(infer_request(np.zeros((1, 3), np.float32)), timeout=10)
        while repo.get("double").in_flight == 0:
            threading.Event().wait(0.005)
        with pytest.raises(grpc.RpcError) as refused:
            infer(infer_request(np.zeros((1, 3), np.float32)), timeout=10)
        assert refused.value.code() == Code.UNAVAILABLE
        assert "limit of 1 gRPC requests" in str(refused.value.details())
        assert first.result().outputs[0].shape == [1, 3]


def test_stop_lets_calls_in_progress_finish_and_refuses_new_ones() -> None:
    repo = FakeRepository(FakeModel("double", "1", delay_s=0.3))
    with running_service(repo, HttpConfig()) as running:
        infer = Client(running.address).rpc("ModelInfer", pb.ModelInferResponse)
        x = np.ones((2, 3), np.float32)
        in_progress = infer.future(infer_request(x), timeout=10)
        while repo.get("double").in_flight < 2:
            threading.Event().wait(0.005)
        running.stop(grace_s=5)  # returns once the server has answered the call
        # The answer is on its way (a loaded machine may take a moment to hand it to the
        # client's thread); it must arrive, not be cancelled by the stop.
        answer = in_progress.result(timeout=5).raw_output_contents[0]
        assert np.frombuffer(answer, np.float32).tolist() == [2.0] * 6
        with pytest.raises(grpc.RpcError) as refused:
            infer(infer_request(x), timeout=10)
        assert refused.value.code() == Code.UNAVAILABLE


def test_serving_commands_do_not_import_grpc_until_they_serve() -> None:
    code = (
        "import sys, packrat.cli, packrat.server.launch, packrat.server.http_inference; "
        "assert 'grpc' not in sys.modules, 'grpc imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_grpc_port_and_switch_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text("[server]\ngrpc_port = 9001\n")
    assert (LaunchConfig().grpc_port, LaunchConfig().grpc) == (8001, True)  # Triton's port
    from_file = load_config_file(path)
    assert (from_file.grpc_port, from_file.grpc) == (9001, True)
    assert with_cli(from_file, [], grpc_port=0, grpc=None).grpc_port == 0
    assert not with_cli(from_file, [], grpc_port=None, grpc=False).grpc
    path.write_text("[server]\ngrpc = false\n")
    assert not load_config_file(path).grpc
    for bad, message in (("grpc_port = 70000", "grpc_port must be a port"), ("grpc = 1", "grpc")):
        path.write_text(f"[server]\n{bad}\n")
        with pytest.raises(PackratError, match=message):
            load_config_file(path)


def test_a_grpc_port_in_use_fails_at_once() -> None:
    """Even when another gRPC server holds it: gRPC would share it (SO_REUSEPORT)."""

    async def bind_twice() -> None:
        first = bind_grpc("127.0.0.1", 0, max_message_bytes=1024)
        try:
            with pytest.raises(PackratError, match=f"grpc API on 127.0.0.1:{first.port}"):
                bind_grpc("127.0.0.1", first.port, max_message_bytes=1024)
        finally:
            await first.stop(None)

    asyncio.run(bind_twice())
