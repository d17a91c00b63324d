"""The Open Inference Protocol routes: health, metadata, JSON and binary inference, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from packrat.models.inputs import InputSpec
from packrat.server.http_config import HttpConfig
from packrat.server.http_inference import create_inference_app
from packrat.server.metrics import Metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FAIL_MARKER, FakeModel, FakeRepository  # noqa: E402

TOKENS = InputSpec((4,), "int64", low=0, high=50)
INFER = "/v2/models/double/infer"


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository(
        FakeModel("double", "1", delay_s=0.01),
        FakeModel("double", "2"),
        FakeModel("bert", "1", TOKENS),
        FakeModel("anything", "1", None),
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(repo: FakeRepository, metrics: Metrics) -> TestClient:
    config = HttpConfig(
        max_body_bytes=4096, max_infer_rows=100, inline_decode_bytes=64, inline_encode_values=4
    )
    return TestClient(create_inference_app(repo, config, metrics), raise_server_exceptions=False)


def tensor(data: Any, shape: list[int], datatype: str = "FP32", name: str = "x") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def assert_error(response: Any, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == status
    assert text in response.json()["error"], response.json()


def test_health_and_server_metadata(client: TestClient, repo: FakeRepository) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2").json()["name"] == "packrat"
    repo.get("bert").degraded = True
    assert_error(client.get("/v2/health/ready"), 503, "replacing a lost instance: bert")
    assert client.get("/v2/health/live").status_code == 200
    repo.get("bert").ready = False
    assert client.get("/v2/health/live").status_code == 200
    assert_error(client.get("/v2/health/ready"), 503, "bert")


def test_model_readiness(client: TestClient, repo: FakeRepository) -> None:
    assert client.get("/v2/models/double/ready").json()["ready"] is True
    repo.get("double", "2").ready = False
    assert client.get("/v2/models/double/versions/1/ready").status_code == 200
    assert_error(client.get("/v2/models/double/versions/2/ready"), 503, "not ready")
    assert_error(client.get("/v2/models/nope/ready"), 404, "nope")


def test_model_metadata(client: TestClient) -> None:
    meta = client.get("/v2/models/double").json()
    assert meta["name"] == "double" and meta["platform"] == "packrat"
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "input0", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"][0]["name"] == "output0"
    bert = client.get("/v2/models/bert/versions/1").json()
    assert bert["inputs"][0]["datatype"] == "INT64"
    assert client.get("/v2/models/anything").json()["inputs"] == []
    assert_error(client.get("/v2/models/double/versions/7"), 404, "7")


@pytest.mark.parametrize(
    "data", [[1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]]], ids=["flat", "nested"]
)
def test_json_infer_splits_rows_into_requests(
    client: TestClient, repo: FakeRepository, data: Any
) -> None:
    response = client.post(INFER, json={"id": "r1", "inputs": [tensor(data, [2, 3])]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "r1" and body["model_name"] == "double" and body["model_version"] == "1"
    assert body["outputs"] == [
        {"name": "output0", "datatype": "FP32", "shape": [2, 3], "data": [2, 4, 6, 8, 10, 12]}
    ]
    requests = repo.get("double").requests
    assert [r.tolist() for r in requests] == [[1, 2, 3], [4, 5, 6]]
    assert all(r.untyped_storage().nbytes() == 12 for r in requests)  # rows own their memory


def test_rows_are_submitted_concurrently(client: TestClient, repo: FakeRepository) -> None:
    """16 rows are all awaited at once (so the batcher can batch them), not one by one."""
    model = repo.get("double")
    model.delay_s = 0.05
    data = [[float(i)] * 3 for i in range(16)]
    response = client.post(INFER, json={"inputs": [tensor(data, [16, 3])]})
    assert response.status_code == 200
    assert model.max_in_flight == 16


def test_binary_infer_in_and_out(client: TestClient) -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 24},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = client.post(
        INFER,
        content=header + values.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:length])
    output = meta["outputs"][0]
    assert output["parameters"] == {"binary_data_size": 24} and output["shape"] == [2, 3]
    result = np.frombuffer(response.content[length:], dtype=np.float32).reshape(2, 3)
    assert np.array_equal(result, values * 2)


def test_requested_outputs_choose_json_or_binary(client: TestClient) -> None:
    request = {"inputs": [tensor([1, 2, 3], [1, 3])], "outputs": [{"name": "output0"}]}
    assert client.post(INFER, json=request).json()["outputs"][0]["data"] == [2, 4, 6]
    request["outputs"] = [{"name": "output0", "parameters": {"binary_data": True}}]
    assert "inference-header-content-length" in client.post(INFER, json=request).headers
    request["outputs"] = [{"name": "logits"}]
    assert_error(client.post(INFER, json=request), 400, "unknown outputs ['logits']")


def test_integer_inputs_and_a_spec_less_model(client: TestClient) -> None:
    ids = client.post(
        "/v2/models/bert/infer", json={"inputs": [tensor([1, 2, 3, 4], [1, 4], "INT64")]}
    )
    assert ids.json()["outputs"][0] == {
        "name": "output0",
        "datatype": "INT64",
        "shape": [1, 4],
        "data": [1, 2, 3, 4],
    }
    free = client.post(
        "/v2/models/anything/infer", json={"inputs": [tensor([1.5, 2, 3, 4], [2, 2])]}
    )
    assert free.json()["outputs"][0]["data"] == [3, 4, 6, 8]


@pytest.mark.parametrize(
    ("request_body", "text"),
    [
        ({"inputs": [tensor([1, 2, 3], [1, 3], "FP64")]}, "is FP64; the model takes FP32"),
        ({"inputs": [tensor([1, 2, 3], [3])]}, "shape [3] is not [n, *[3]]"),
        ({"inputs": [tensor([1, 2, 3, 4], [1, 4])]}, "is not [n, *[3]]"),
        ({"inputs": [tensor([1, 2], [1, 3])]}, "expected [1, 3]"),
        ({"inputs": [tensor([], [0, 3])]}, "batch size >= 1"),
        ({"inputs": [tensor([], [101, 3])]}, "batch size 101 is over the limit of 100 rows"),
        ({"inputs": [tensor([1, 2, 3], [1, 3], "BYTES")]}, "'BYTES' is not supported"),
        ({"inputs": [tensor([1, 2, 3], [1, 3]), tensor([1], [1])]}, "one input tensor, got 2"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32"}]}, "neither data nor"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"name": "x", "shape": ["1"], "datatype": "FP32"}]}, "inputs.0.shape.0"),
        (
            {"inputs": [tensor([1, 2, 3], [1, 3])], "parameters": {"binary_data_output": 1}},
            "true or false",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1, 3],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 12},
                    }
                ]
            },
            "no Inference-Header-Content-Length",
        ),
    ],
)
def test_bad_infer_requests(client: TestClient, request_body: dict[str, Any], text: str) -> None:
    assert_error(client.post(INFER, json=request_body), 400, text)


def test_malformed_json_and_bad_header_length(client: TestClient) -> None:
    assert_error(client.post(INFER, content=b"{nope"), 400, "invalid infer request")
    response = client.post(INFER, content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert_error(response, 400, "not within the 2-byte body")


def test_binary_size_mismatch(client: TestClient) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 20},
                }
            ]
        }
    ).encode()
    response = client.post(
        INFER,
        content=header + bytes(20),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert_error(response, 400, "is 20 bytes; FP32 [2, 3] is 24 bytes")


def test_infer_errors(client: TestClient, repo: FakeRepository) -> None:
    good = {"inputs": [tensor([1, 2, 3], [1, 3])]}
    assert_error(client.post("/v2/models/nope/infer", json=good), 404, "nope")
    failing = {"inputs": [tensor([[1, 2, 3], [FAIL_MARKER, 0, 0]], [2, 3])]}
    assert_error(client.post(INFER, json=failing), 500, "fake model failed on the marker")
    assert_error(client.post(INFER, json={"inputs": [tensor([0] * 3000, [1000, 3])]}), 413, "limit")
    repo.get("double").ready = False
    assert_error(client.post(INFER, json=good), 503, "not ready")


def test_versioned_infer_and_metrics(
    client: TestClient, repo: FakeRepository, metrics: Metrics
) -> None:
    response = client.post(
        "/v2/models/double/versions/2/infer", json={"inputs": [tensor([1, 2, 3], [1, 3])]}
    )
    assert response.json()["model_version"] == "2"
    assert len(repo.get("double", "2").requests) == 1
    assert 'packrat_requests_total{code="200",model="double"} 1.0' in metrics.exposition().decode()


def test_bfloat16_binary_output(repo: FakeRepository) -> None:
    repo.add(FakeModel("half", "1", InputSpec((2,), "bfloat16")))
    client = TestClient(create_inference_app(repo))
    response = client.post(
        "/v2/models/half/infer",
        json={
            "inputs": [tensor([1.5, 2], [1, 2], "BF16")],
            "outputs": [{"name": "output0", "parameters": {"binary_data": True}}],
        },
    )
    length = int(response.headers["inference-header-content-length"])
    assert json.loads(response.content[:length])["outputs"][0]["datatype"] == "BF16"
    raw = bytearray(response.content[length:])
    assert torch.frombuffer(raw, dtype=torch.bfloat16).tolist() == [3.0, 4.0]


class ConfiguredModel(FakeModel):
    """A FakeModel that describes its batching and backend as the runtime does."""

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "backend": {"backend": "openvino", "precision": "bf16"},
            "batching": {"max_batch_size": 4, "max_batch_delay_ms": 2.5},
        }


def test_model_configuration(client: TestClient, repo: FakeRepository) -> None:
    """Triton's model configuration: batch dimension out of dims, the plan's instances."""
    assert "model_configuration" in client.get("/v2").json()["extensions"]
    repo.add(ConfiguredModel("configured", "1", InputSpec((2, 5), "float32")))
    config = client.get("/v2/models/configured/config").json()
    assert config["name"] == "configured" and config["backend"] == "openvino"
    assert config["max_batch_size"] == 4
    assert config["input"] == [
        {
            "name": "input0",
            "data_type": "TYPE_FP32",
            "format": "FORMAT_NONE",
            "dims": [2, 5],
            "is_shape_tensor": False,
            "allow_ragged_batch": False,
            "optional": False,
        }
    ]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("output0", "TYPE_FP32", [2, 5])
    ]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2500
    group = config["instance_group"]
    assert [(g["kind"], g["count"]) for g in group] == [("KIND_CPU", 2)]
    parameters = config["parameters"]
    assert parameters["packrat_plan"] == {"string_value": "2x2 for batch 8"}
    assert "plan decides" in parameters["packrat_instance_group"]["string_value"]
    bert = client.get("/v2/models/bert/versions/1/config").json()
    assert bert["input"][0]["data_type"] == "TYPE_INT64" and bert["input"][0]["dims"] == [4]
    assert bert["output"][0]["data_type"] == "TYPE_INT64" and bert["max_batch_size"] == 8
    assert_error(client.get("/v2/models/nope/config"), 404, "nope")
    assert_error(client.get("/v2/models/double/versions/7/config"), 404, "7")


def test_outputs_are_learned_once_from_an_example_request(
    client: TestClient, repo: FakeRepository
) -> None:
    """Metadata and configuration name the outputs the model returns; one probe serves both,
    and a model that cannot answer yet (not ready, no input spec) gets the placeholder."""
    model = repo.get("double", "2")
    model.ready = False
    versioned = "/v2/models/double/versions/2"
    assert client.get(versioned).json()["outputs"] == [
        {"name": "output0", "datatype": "FP32", "shape": [-1, -1]}
    ]
    assert client.get(versioned + "/config").json()["output"][0]["dims"] == [-1]
    assert model.requests == []
    model.ready = True
    for _ in range(3):
        assert client.get(versioned).json()["outputs"] == [
            {"name": "output0", "datatype": "FP32", "shape": [-1, 3]}
        ]
        assert client.get(versioned + "/config").json()["output"][0]["dims"] == [3]
    assert len(model.requests) == 1
    spec_less = client.get("/v2/models/anything/config").json()
    assert spec_less["input"] == [] and spec_less["output"][0]["dims"] == [-1]
    assert repo.get("anything").requests == []
