"""The API token: both apps refuse requests without it, health checks and metrics stay open."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from packrat.errors import PackratError
from packrat.server.http_config import HttpConfig
from packrat.server.http_inference import create_inference_app
from packrat.server.http_management import create_management_app
from packrat.server.launch import api_token
from packrat.server.launch_config import LaunchConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FakeModel, FakeRepository  # noqa: E402

TOKEN = "s3cret-token-0123456789"
GOOD = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def inference() -> TestClient:
    app = create_inference_app(FakeRepository(FakeModel()), HttpConfig(token=TOKEN))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def management() -> TestClient:
    app = create_management_app(FakeRepository(FakeModel()), HttpConfig(token=TOKEN))
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "a bearer token is required"),
        ({"Authorization": "Bearer wrong-token-0123456789"}, "the bearer token is wrong"),
        ({"Authorization": TOKEN}, "the bearer token is wrong"),  # no "Bearer "
        ({"Authorization": f"Bearer {TOKEN}x"}, "the bearer token is wrong"),
    ],
)
def test_requests_without_the_token_get_401(
    inference: TestClient, management: TestClient, headers: dict[str, str], why: str
) -> None:
    for response in (
        inference.post("/predictions/double", json=[1, 2, 3], headers=headers),
        inference.post("/v2/models/double/infer", json={"inputs": []}, headers=headers),
        inference.get("/openapi.json", headers=headers),
        management.get("/models", headers=headers),
        management.put("/models/double/plan", json={"plan": "fat"}, headers=headers),
    ):
        assert response.status_code == 401, response.text
        assert response.json() == {
            "error": f"{why}: send 'Authorization: Bearer <token>'",
            "code": 401,
        }
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="packrat"'


def test_requests_with_the_token_pass(inference: TestClient, management: TestClient) -> None:
    response = inference.post("/predictions/double", json=[1, 2, 3], headers=GOOD)
    assert response.status_code == 200 and response.json() == [2, 4, 6]
    assert management.get("/models", headers=GOOD).json()["models"][0]["modelName"] == "double"


def test_health_checks_and_metrics_need_no_token(inference: TestClient) -> None:
    assert inference.get("/ping").json() == {"status": "Healthy"}
    assert inference.get("/v2/health/live").status_code == 200
    assert inference.get("/v2/health/ready").status_code == 200
    assert inference.get("/metrics").status_code == 200
    assert inference.get("/v2/health/ready/").status_code == 401  # exact paths only


def test_weak_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        HttpConfig(token="short")
    with pytest.raises(ValueError, match="printable ASCII"):
        HttpConfig(token="has a space in the middle")
    assert TOKEN not in repr(HttpConfig(token=TOKEN))


def test_the_token_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PACKRAT_TOKEN", raising=False)
    assert api_token(LaunchConfig()) is None
    monkeypatch.setenv("PACKRAT_TOKEN", TOKEN)
    assert api_token(LaunchConfig()) == TOKEN
    path = tmp_path / "token.txt"
    path.write_text("from-the-file-0123456789\nignored\n")
    assert api_token(LaunchConfig(token_file=path)) == "from-the-file-0123456789"
    with pytest.raises(PackratError, match="cannot read token file"):
        api_token(LaunchConfig(token_file=tmp_path / "missing"))
    path.write_text("")
    with pytest.raises(PackratError, match="at least 16 characters"):
        api_token(LaunchConfig(token_file=path))
