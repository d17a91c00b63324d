"""The management API as TorchServe's clients use it: registration parameters, set-default,
scale workers, and the describe fields they read."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from packrat.server.api import RegisterOptions
from packrat.server.http_config import HttpConfig
from packrat.server.http_management import create_management_app
from packrat.server.ts_describe import torchserve_fields

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FakeModel, FakeRepository  # noqa: E402


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository(FakeModel("double", "1.0"), FakeModel("double", "2.0"))


@pytest.fixture
def client(repo: FakeRepository) -> TestClient:
    return TestClient(create_management_app(repo, HttpConfig()), raise_server_exceptions=False)


def _error(response: Any, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert text in response.json()["error"]


def test_registration_parameters_that_map_are_honoured(
    client: TestClient, repo: FakeRepository
) -> None:
    params = {
        "url": "resnet50",
        "model_name": "r50",
        "batch_size": 4,
        "max_batch_delay": 50,
        "response_timeout": 30,
        "runtime": "python",
        "synchronous": "true",
    }
    reply = client.post("/models", params=params)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": 'Model "r50" Version: 1.0 registered'}
    assert repo.options["r50"] == RegisterOptions(4, 50.0, 30.0)
    client.post("/models", params={"url": "gpt2", "response_timeout": -1})
    assert repo.options["gpt2"] == RegisterOptions()  # -1: the server's default, as TorchServe


def test_parameters_without_meaning_are_accepted_with_warnings(client: TestClient) -> None:
    params = {"url": "gpt2", "initial_workers": 3, "synchronous": "false", "startup_timeout": 9}
    reply = client.post("/models", params=params).json()
    assert reply["status"] == 'Model "gpt2" Version: 1.0 registered'
    assert [w.split("=")[0] for w in reply["warnings"]] == [
        "initial_workers",
        "synchronous",
        "startup_timeout",
    ]
    assert "the plan decides" in reply["warnings"][0]


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"handler": "my_handler:handle"}, "handler cannot be set"),
        ({"s3_sse_kms": "true"}, "never downloads"),
        ({"runtime": "LSP"}, "runtime 'LSP' is not supported"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_batch_delay": -5}, "max_batch_delay"),
        ({"response_timeout": -5}, "response_timeout"),
        ({"batch_size": "four"}, "batch_size"),
    ],
)
def test_parameters_that_cannot_be_honoured_get_400(
    client: TestClient, repo: FakeRepository, params: dict[str, Any], text: str
) -> None:
    _error(client.post("/models", params={"url": "gpt2", **params}), 400, text)
    assert "gpt2" not in repo.options


def test_set_default_version(client: TestClient, repo: FakeRepository) -> None:
    assert client.get("/models/double").json()[0]["modelVersion"] == "1.0"
    reply = client.put("/models/double/2.0/set-default")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": 'Default version successfully updated for model "double" to "2.0"'
    }
    assert client.get("/models/double").json()[0]["modelVersion"] == "2.0"
    _error(client.put("/models/double/3.0/set-default"), 404, "3.0")


def test_scale_workers_answers_that_the_plan_decides(client: TestClient) -> None:
    reply = client.put("/models/double", params={"min_worker": 3, "synchronous": "true"})
    assert reply.status_code == 200
    status = reply.json()["status"]
    assert status.startswith("Workers not scaled for model: double:")
    assert "plan decides" in status and "(2 now)" in status and "min_worker=3 ignored" in status
    versioned = client.put("/models/double/2.0", params={"min_worker": 1}).json()["status"]
    assert "model: double, version: 2.0" in versioned
    both = client.put("/models/double", params={"min_worker": 3, "max_worker": 1})
    assert both.status_code == 200 and "max_worker=1 ignored" in both.json()["status"]
    _error(client.put("/models/double", params={"min_worker": -1}), 400, "min_worker")
    _error(client.put("/models/nope", params={"min_worker": 1}), 404, "nope")


def test_describe_has_torchserve_fields_beside_packrat_ones(client: TestClient) -> None:
    [described] = client.get("/models/double").json()
    assert described["modelUrl"] == "zoo:double" and described["runtime"] == "python"
    assert (described["minWorkers"], described["maxWorkers"]) == (2, 2)
    assert [w["gpu"] for w in described["workers"]] == [False, False]
    assert described["plan"]["describe"] == "2x2" and described["ready"] is True


def test_torchserve_fields_from_a_runtime_description() -> None:
    description = {
        "ready": True,
        "started_at_unix_s": 1538487893.034,
        "loaded_at_startup": True,
        "instances": [{"pid": 41, "rss_bytes": 89247744}, {"pid": 42, "rss_bytes": None}],
        "batching": {
            "max_batch_size": 4,
            "max_batch_delay_ms": 100.0,
            "max_queue": 100,
            "queue_depth": 3,
            "batch_timeout_s": 120.0,
        },
    }
    fields = torchserve_fields(description, "noop.mar")
    assert fields == {
        "modelUrl": "noop.mar",
        "runtime": "python",
        "minWorkers": 2,
        "maxWorkers": 2,
        "batchSize": 4,
        "maxBatchDelay": 100.0,
        "loadedAtStartup": True,
        "responseTimeout": 120,
        "jobQueueStatus": {"remainingCapacity": 97, "pendingRequests": 3},
        "workers": [
            {
                "id": str(k),
                "startTime": "2018-10-02T13:44:53.034Z",
                "status": "READY",
                "memoryUsage": memory,
                "pid": pid,
                "gpu": False,
            }
            for k, (pid, memory) in enumerate([(41, 89247744), (42, 0)])
        ],
    }
