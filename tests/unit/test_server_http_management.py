"""The management app (TorchServe's management API) and the standalone metrics app."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from packrat.server.http_config import HttpConfig
from packrat.server.http_management import create_management_app
from packrat.server.metrics import Metrics, create_metrics_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FakeModel, FakeRepository  # noqa: E402


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository(
        FakeModel("double", "1.0"), FakeModel("double", "2.0"), FakeModel("bert", "1")
    )


@pytest.fixture
def client(repo: FakeRepository) -> TestClient:
    return TestClient(create_management_app(repo, HttpConfig()), raise_server_exceptions=False)


JSON = {"content-type": "application/json"}


def assert_error(response: Any, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == status
    assert text in response.json()["error"], response.json()


def test_list_models(client: TestClient) -> None:
    assert client.get("/models").json() == {
        "models": [
            {"modelName": "bert", "modelUrl": "zoo:bert"},
            {"modelName": "double", "modelUrl": "zoo:double"},
            {"modelName": "double", "modelUrl": "zoo:double"},
        ]
    }


def test_list_models_in_pages(client: TestClient) -> None:
    first = client.get("/models", params={"limit": 2}).json()
    assert len(first["models"]) == 2 and first["nextPageToken"] == "2"
    rest = client.get("/models", params={"limit": 2, "next_page_token": 2}).json()
    assert len(rest["models"]) == 1 and "nextPageToken" not in rest
    assert_error(client.get("/models", params={"limit": 0}), 400, "limit")
    assert_error(client.get("/models", params={"limit": "many"}), 400, "limit")


def test_describe_default_version_a_version_and_all(client: TestClient) -> None:
    [default] = client.get("/models/double").json()
    assert default["modelName"] == "double" and default["modelVersion"] == "1.0"
    assert default["ready"] is True
    assert default["plan"]["describe"] == "2x2" and default["instances"][0]["cores"] == [0, 1]
    [second] = client.get("/models/double/2.0").json()
    assert second["modelVersion"] == "2.0"
    assert [d["modelVersion"] for d in client.get("/models/double/all").json()] == ["1.0", "2.0"]
    assert_error(client.get("/models/nope"), 404, "nope")
    assert_error(client.get("/models/double/3.0"), 404, "3.0")
    assert_error(client.get("/models/nope/all"), 404, "nope")


def test_register(client: TestClient, repo: FakeRepository) -> None:
    response = client.post("/models", params={"url": "resnet50", "model_name": "r50"})
    assert response.status_code == 200
    assert response.json() == {"status": 'Model "r50" Version: 1.0 registered'}
    assert repo.get("r50").name == "r50"
    assert (
        client.post("/models", params={"url": "gpt2"}).json()["status"].startswith('Model "gpt2"')
    )


def test_register_errors(client: TestClient) -> None:
    assert_error(client.post("/models"), 400, "url")
    assert_error(client.post("/models", params={"url": "bad"}), 400, "cannot resolve")
    assert_error(client.post("/models", params={"url": "bert"}), 409, "already served")


def test_unregister(client: TestClient, repo: FakeRepository) -> None:
    assert client.delete("/models/double/2.0").json() == {
        "status": 'Model "double" version: 2.0 unregistered'
    }
    assert [m.version for m in repo.models() if m.name == "double"] == ["1.0"]
    assert client.delete("/models/bert").json() == {"status": 'Model "bert" unregistered'}
    assert repo.unregistered == [("double", "2.0"), ("bert", None)]
    assert_error(client.delete("/models/bert"), 404, "bert")


def test_openapi_lists_the_management_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/models",
        "/models/{model_name}",
        "/models/{model_name}/all",
        "/models/{model_name}/{version}",
        "/models/{model_name}/plan",
        "/models/{model_name}/{version}/plan",
        "/models/{model_name}/cores",
        "/models/{model_name}/{version}/cores",
        "/models/{model_name}/switches",
        "/models/{model_name}/{version}/switches",
        "/models/{model_name}/{version}/set-default",
    }
    assert set(paths["/models"]) == {"get", "post"}
    assert set(paths["/models/{model_name}/plan"]) == {"put"}
    body = paths["/models/{model_name}/plan"]["put"]["requestBody"]["content"]
    assert set(body["application/json"]["schema"]["properties"]) == {"plan", "policy"}


def test_pin_a_plan_and_release_it(client: TestClient, repo: FakeRepository) -> None:
    reply = client.put("/models/double/plan", json={"plan": "<2,1,4>"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == 'Model "double" Version: 1.0 runs plan <2,1,4>'
    assert body["model"]["modelName"] == "double" and body["model"]["plan"]["describe"] == "<2,1,4>"
    form = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
    reply = client.put("/models/double/2.0/plan", content=b'{"policy": "follow"}', headers=form)
    assert reply.json()["model"]["modelVersion"] == "2.0"
    assert repo.changes == [("double", None, "plan"), ("double", "2.0", "policy")]
    [switch] = client.get("/models/double/switches").json()
    assert switch["to"] == "<2,1,4>"
    [switch] = client.get("/models/double/2.0/switches").json()
    assert switch["to"] == "policy follow"
    assert_error(client.get("/models/nope/switches"), 404, "nope")


def test_plan_changes_that_are_refused(client: TestClient, repo: FakeRepository) -> None:
    assert_error(client.put("/models/double/plan", json={}), 400, "either a plan")
    both = {"plan": "fat", "policy": "auto"}
    assert_error(client.put("/models/double/plan", json=both), 400, "either a plan")
    assert_error(client.put("/models/double/plan", json={"plan": ""}), 400, "plan")
    assert_error(client.put("/models/double/plan", json={"threads": 3}), 400, "threads")
    assert_error(client.put("/models/double/plan", content=b"{nope", headers=JSON), 400, "JSON")
    assert_error(client.put("/models/nope/plan", json={"plan": "fat"}), 404, "nope")
    assert repo.changes == []


def test_move_a_model_to_other_cores(client: TestClient, repo: FakeRepository) -> None:
    assert client.put("/models/bert/cores", json={"cores": "0-1"}).status_code == 200
    assert client.put("/models/double/2.0/cores", json={"cores": [1]}).status_code == 200
    assert_error(client.put("/models/bert/cores", json={"cores": [-1.5]}), 400, "cores")
    assert_error(client.put("/models/bert/cores", json={}), 400, "cores")
    assert repo.changes == [("bert", None, "cores 0-1"), ("double", "2.0", "cores [1]")]


def test_metrics_app_serves_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe_request("m", 200, 0.01)
    first.set_plan("m", "1x4")
    first.set_plan("m", "2x2")
    first.set_queue_depth("m", 3)
    first.observe_batch("m", [3, 1, 0], [0.5, 0.25, 0.0], 0.6)
    client = TestClient(create_metrics_app(first))
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'packrat_requests_total{code="200",model="m"} 1.0' in text
    assert 'packrat_plan{model="m",plan="2x2"} 1.0' in text
    assert 'plan="1x4"' not in text
    assert 'packrat_instance_busy_seconds_total{instance="0",model="m"} 0.5' in text
    assert 'packrat_batch_size_bucket{le="4.0",model="m"} 1.0' in text
    assert "packrat_requests_total{" not in second.exposition().decode()
    first.forget_model("m")
    text = client.get("/metrics").text
    assert "packrat_plan{" not in text and "packrat_queue_depth{" not in text
    first.forget_model("never-seen")
    assert client.get("/nope").json() == {"error": "Not Found", "code": 404}


def test_time_request_records_the_status_of_what_escapes() -> None:
    from packrat.server.errors import NotFound

    metrics = Metrics()
    with pytest.raises(NotFound), metrics.time_request("m"):
        raise NotFound("x")
    with pytest.raises(KeyError), metrics.time_request("m"):
        raise KeyError("x")
    text = metrics.exposition().decode()
    assert 'packrat_requests_total{code="404",model="m"} 1.0' in text
    assert 'packrat_requests_total{code="500",model="m"} 1.0' in text
