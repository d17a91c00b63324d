"""The inference app's TorchServe routes, body limits, errors, metrics and OpenAPI spec."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from packrat.models.inputs import InputSpec
from packrat.server.http_config import HttpConfig
from packrat.server.http_inference import create_inference_app
from packrat.server.metrics import Metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FAIL_MARKER, FakeModel, FakeRepository  # noqa: E402

TOKENS = InputSpec((4,), "int64", low=0, high=50)


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository(
        FakeModel("double", "1.0"),
        FakeModel("double", "2.0"),
        FakeModel("bert", "1", TOKENS),
        FakeModel("resnet", "1", InputSpec((3, 8, 8))),
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(repo: FakeRepository, metrics: Metrics) -> TestClient:
    app = create_inference_app(repo, HttpConfig(max_body_bytes=1024), metrics)
    return TestClient(app, raise_server_exceptions=False)


def assert_error(response: Any, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    assert text in body["error"], body


def test_ping_is_healthy_when_every_model_is_ready(
    client: TestClient, repo: FakeRepository
) -> None:
    assert client.get("/ping").json() == {"status": "Healthy"}
    repo.get("bert").degraded = True  # replacing a lost instance: alive, requests queue
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.json() == {"status": "Degraded", "degraded": ["bert"]}
    repo.get("bert").ready = False
    response = client.get("/ping")
    assert response.status_code == 503
    assert response.json() == {"status": "Unhealthy"}


@pytest.mark.parametrize("method", ["post", "put"])
def test_predict_json(client: TestClient, method: str) -> None:
    response = getattr(client, method)("/predictions/double", json=[1, 2, 3.5])
    assert response.status_code == 200
    assert response.json() == [2, 4, 7]


def test_predict_says_the_models_compute_time(client: TestClient, repo: FakeRepository) -> None:
    repo.get("double").delay_s = 0.0125
    response = client.post("/predictions/double", json=[1.0, 2.0, 3.0])
    assert response.status_code == 200
    assert response.headers["server-timing"] == "compute;dur=12.500"


def test_predict_picks_the_version(client: TestClient, repo: FakeRepository) -> None:
    client.post("/predictions/double/2.0", json=[1, 2, 3])
    assert len(repo.get("double", "2.0").requests) == 1
    assert repo.get("double", "1.0").requests == []


def test_predict_raw_bytes(client: TestClient) -> None:
    body = np.array([1, 2, 3], dtype=np.float32).tobytes()
    response = client.post(
        "/predictions/double", content=body, headers={"content-type": "application/octet-stream"}
    )
    assert response.json() == [2, 4, 6]


def test_predict_text_and_token_ids(client: TestClient) -> None:
    text = client.post(
        "/predictions/bert", content=b"hello world", headers={"content-type": "text/plain"}
    )
    ids = text.json()
    assert len(ids) == 4 and ids[2:] == [0, 0] and all(0 <= i < 50 for i in ids)
    assert client.post("/predictions/bert", json=[3, 4]).json() == [3, 4, 0, 0]


def test_predict_image_without_a_content_type(client: TestClient) -> None:
    """What `curl -T kitten.jpg` sends: a PUT with no Content-Type."""
    out = io.BytesIO()
    Image.new("RGB", (10, 10), (0, 255, 0)).save(out, format="JPEG")
    response = client.put(
        "/predictions/resnet", content=out.getvalue(), headers={"content-type": ""}
    )
    assert response.status_code == 200, response.text
    assert np.array(response.json()).shape == (3, 8, 8)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "text"),
    [
        (b"[1, 2", "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "shape [2]; expected [3]"),
        (b'[1, 2, "x"]', "application/json", 400, "float32 input takes numbers"),
        (b"\x00" * 8, "application/octet-stream", 400, "8 bytes"),
        (b"<a/>", "application/xml", 415, "not supported"),
        (b"hi", "text/plain", 415, "token-id inputs"),
    ],
)
def test_bad_payloads(
    client: TestClient, body: bytes, content_type: str, status: int, text: str
) -> None:
    response = client.post(
        "/predictions/double", content=body, headers={"content-type": content_type}
    )
    assert_error(response, status, text)


def test_compressed_bodies_are_unsupported(client: TestClient) -> None:
    response = client.post(
        "/predictions/double", content=b"[1,2,3]", headers={"content-encoding": "gzip"}
    )
    assert_error(response, 415, "Content-Encoding")


def test_unknown_model_or_version_is_404(client: TestClient) -> None:
    assert_error(client.post("/predictions/nope", json=[1, 2, 3]), 404, "nope")
    assert_error(client.post("/predictions/double/9.9", json=[1, 2, 3]), 404, "9.9")


def test_model_failure_is_500_with_its_message(client: TestClient) -> None:
    response = client.post("/predictions/double", json=[FAIL_MARKER, 0, 0])
    assert_error(response, 500, "fake model failed on the marker")


def test_a_model_not_ready_is_503(client: TestClient, repo: FakeRepository) -> None:
    repo.get("double").ready = False
    assert_error(client.post("/predictions/double", json=[1, 2, 3]), 503, "not ready")


def test_a_full_queue_is_503_with_retry_after(client: TestClient, repo: FakeRepository) -> None:
    from packrat.server.errors import Unavailable

    repo.get("double").refusal = Unavailable("the model's queue is full", retry_after_s=1)
    response = client.post("/predictions/double", json=[1, 2, 3])
    assert_error(response, 503, "queue is full")
    assert response.headers["Retry-After"] == "1"
    repo.get("double").ready = False  # no hint when there is nothing to wait for
    assert "Retry-After" not in client.post("/predictions/double", json=[1, 2, 3]).headers


def test_oversize_body_is_413(client: TestClient) -> None:
    response = client.post("/predictions/double", json=list(range(1000)))
    assert_error(response, 413, "over the limit of 1024 bytes")


def test_streamed_oversize_body_without_length_is_413(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(100):
            yield b"[" + b"1," * 50

    response = client.post("/predictions/double", content=chunks())
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "over-1024-byte body")


def test_content_length_over_the_limit_is_refused_before_reading(repo: FakeRepository) -> None:
    app = create_inference_app(repo, HttpConfig(max_body_bytes=1024))
    received: list[str] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append("body")
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predictions/double",
        "raw_path": b"/predictions/double",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", b"1000000000"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert received == []
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["code"] == 413


def test_unknown_route_and_method_are_json_errors(client: TestClient) -> None:
    assert_error(client.get("/nowhere"), 404, "Not Found")
    assert_error(client.delete("/ping"), 405, "Method Not Allowed")
    # POST and PUT are two routes of one path: a 405 names both.
    assert client.delete("/predictions/double").headers["Allow"] == "POST, PUT"
    assert client.get("/predictions/double/1.0").headers["Allow"] == "POST, PUT"
    assert client.delete("/ping").headers["Allow"] == "GET"


def test_metrics_count_requests_by_model_and_code(client: TestClient, metrics: Metrics) -> None:
    client.post("/predictions/double", json=[1, 2, 3])
    client.post("/predictions/double", json=[1, 2])
    metrics.observe_batch("double", [2, 1], [0.25, 0.25], 0.3)
    metrics.set_queue_depth("double", 5)
    metrics.set_plan("double", "2x2")
    text = client.get("/metrics").text
    assert 'packrat_requests_total{code="200",model="double"} 1.0' in text
    assert 'packrat_requests_total{code="400",model="double"} 1.0' in text
    assert 'packrat_request_latency_seconds_count{model="double"} 2.0' in text
    assert 'packrat_batch_size_count{model="double"} 1.0' in text
    assert 'packrat_queue_depth{model="double"} 5.0' in text
    assert 'packrat_plan{model="double",plan="2x2"} 1.0' in text
    assert 'packrat_instance_busy_seconds_total{instance="1",model="double"} 0.25' in text
    assert 'packrat_batch_latency_seconds_sum{model="double"} 0.3' in text
    metrics.observe_switch("double", "1x4", 0.004)
    text = client.get("/metrics").text
    assert 'packrat_reconfigurations_total{model="double"} 1.0' in text
    assert 'packrat_reconfiguration_seconds_count{model="double"} 1.0' in text
    assert 'packrat_plan{model="double",plan="1x4"} 1.0' in text
    assert 'plan="2x2"' not in text


def test_metrics_show_the_backend_and_each_candidates_accuracy(
    client: TestClient, metrics: Metrics
) -> None:
    accuracy = {"min_cosine": 0.9991, "max_abs_error": 0.02, "top1_agreement": 1.0}
    described = {
        "backend": "openvino",
        "precision": "bf16",
        "accuracy": {"openvino bf16": accuracy},
    }
    metrics.set_backend("double", described)
    text = client.get("/metrics").text
    assert 'packrat_backend{backend="openvino",model="double",precision="bf16"} 1.0' in text
    cosine = (
        'packrat_backend_accuracy{candidate="openvino bf16",measure="min_cosine",model="double"}'
    )
    assert f"{cosine} 0.9991" in text
    metrics.set_backend("double", {"backend": "torch", "precision": "fp32", "accuracy": {}})
    text = client.get("/metrics").text
    assert 'packrat_backend{backend="torch",model="double",precision="fp32"} 1.0' in text
    assert "openvino" not in text  # the previous choice's series are gone
    metrics.forget_model("double")
    assert "packrat_backend{" not in client.get("/metrics").text


def test_openapi_lists_the_routes_and_body_types(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/ping",
        "/predictions/{model_name}",
        "/predictions/{model_name}/{version}",
        "/metrics",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/versions/{version}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{version}/infer",
    ):
        assert path in paths, path
    body = paths["/predictions/{model_name}"]["post"]["requestBody"]["content"]
    assert {
        "application/octet-stream",
        "image/jpeg",
        "image/png",
        "text/plain",
        "application/json",
    } <= set(body)
    assert (
        "application/json"
        in paths["/v2/models/{model_name}/infer"]["post"]["requestBody"]["content"]
    )


@pytest.mark.parametrize("field", ["max_body_bytes", "max_image_pixels", "inline_decode_bytes"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_config_names_a_bad_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"HttpConfig.{field} must be an integer > 0"):
        HttpConfig(**{field: value})  # type: ignore[arg-type]


def test_http_modules_do_not_import_torch() -> None:
    code = (
        "import sys, packrat.server.http_inference, packrat.server.http_management; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


RAW = {"Content-Type": "application/octet-stream"}


def test_predict_answers_raw_tensor_bytes_when_the_client_accepts_them(
    client: TestClient,
) -> None:
    """`Accept: application/octet-stream` gets the output's bytes, shape and dtype in headers:
    no JSON for a large output; a client that prefers JSON still gets JSON."""
    x = np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8) - 50.5
    accept = {**RAW, "Accept": "application/octet-stream"}
    response = client.post("/predictions/resnet", content=x.tobytes(), headers=accept)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-tensor-shape"] == "3,8,8"
    assert response.headers["x-tensor-dtype"] == "float32"
    got = np.frombuffer(response.content, "<f4").reshape(3, 8, 8)
    np.testing.assert_array_equal(got, 2 * x)
    for prefers_json in ("application/json, application/octet-stream", "*/*", ""):
        response = client.post(
            "/predictions/resnet", content=x.tobytes(), headers={**RAW, "Accept": prefers_json}
        )
        assert response.headers["content-type"] == "application/json", prefers_json
        np.testing.assert_array_equal(np.array(response.json()), 2 * x)


def test_an_answer_with_no_raw_form_is_json_or_406_if_only_raw_is_accepted(
    client: TestClient, repo: FakeRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def two_outputs(request: Any) -> tuple[Any, float]:
        return {"logits": request * 2, "mask": request > 0}, 0.0

    monkeypatch.setattr(repo.get("resnet"), "infer_timed", two_outputs)
    x = np.ones((3, 8, 8), np.float32).tobytes()
    either = {**RAW, "Accept": "application/octet-stream, application/json;q=0.5"}
    response = client.post("/predictions/resnet", content=x, headers=either)
    assert response.status_code == 200 and set(response.json()) == {"logits", "mask"}
    only_raw = {**RAW, "Accept": "application/octet-stream"}
    response = client.post("/predictions/resnet", content=x, headers=only_raw)
    assert_error(response, 406, "has no raw form; accept application/json")


def test_predict_multipart_reads_the_data_field(client: TestClient) -> None:
    """`curl -F data=@kitten.jpg`: the `data` field is decoded as if it were the body."""
    out = io.BytesIO()
    Image.new("RGB", (10, 10), (0, 255, 0)).save(out, format="JPEG")
    files = {
        "other": ("x.txt", b"ignored", "text/plain"),
        "data": ("kitten.jpg", out.getvalue(), "image/jpeg"),
    }
    response = client.post("/predictions/resnet", files=files)
    assert response.status_code == 200, response.text
    assert np.array(response.json()).shape == (3, 8, 8)
    json_field = {"body": (None, b"[1, 2, 3]", "application/json")}
    assert client.post("/predictions/double", files=json_field).json() == [2, 4, 6]


def test_predict_malformed_multipart_is_400(client: TestClient) -> None:
    response = client.post(
        "/predictions/double",
        content=b"--x\r\nno headers end",
        headers={"content-type": "multipart/form-data"},
    )
    assert_error(response, 400, "boundary")
