"""The prediction lane: predictions are answered ahead of FastAPI's stack, the rest pass on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from packrat.server.api import ServedModel
from packrat.server.errors import BadRequest, Unavailable
from packrat.server.http_inference import create_inference_app
from packrat.server.prediction_lane import PredictionLane, prediction_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FakeModel, FakeRepository  # noqa: E402


@pytest.mark.parametrize(
    ("method", "path", "target"),
    [
        ("POST", "/predictions/resnet50", ("resnet50", None)),
        ("PUT", "/predictions/resnet50", ("resnet50", None)),
        ("POST", "/predictions/resnet50/2.0", ("resnet50", "2.0")),
        ("GET", "/predictions/resnet50", None),
        ("POST", "/predictions/", None),
        ("POST", "/predictions/resnet50/", None),
        ("POST", "/predictions/a/b/c", None),
        ("POST", "/v2/models/resnet50/infer", None),
        ("POST", "/predictionsx/resnet50", None),
    ],
)
def test_the_lane_takes_exactly_the_prediction_routes(
    method: str, path: str, target: tuple[str, str | None] | None
) -> None:
    assert prediction_target(method, path) == target


class Behind:
    """The app behind the lane: records the paths that reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await PlainTextResponse("behind")(scope, receive, send)


def _lane(predict_error: Exception | None = None) -> tuple[TestClient, Behind, list[str]]:
    behind = Behind()
    asked: list[str] = []

    async def predict(request: Request, model: ServedModel) -> Response:
        asked.append(f"{model.name}:{model.version} {(await request.body()).decode()}")
        if predict_error is not None:
            raise predict_error
        return PlainTextResponse("predicted")

    repo = FakeRepository(FakeModel("m", "1.0"), FakeModel("m", "2.0"))
    lane = PredictionLane(behind, repo, predict)  # type: ignore[arg-type]
    return TestClient(lane), behind, asked


def test_predictions_are_answered_by_the_lane_and_everything_else_passes_on() -> None:
    client, behind, asked = _lane()
    assert client.post("/predictions/m", content=b"x").text == "predicted"
    assert client.put("/predictions/m/2.0", content=b"y").text == "predicted"
    assert client.get("/predictions/m").text == "behind"
    assert client.post("/predictions/m/2.0/extra").text == "behind"
    assert client.get("/ping").text == "behind"
    assert asked == ["m:1.0 x", "m:2.0 y"]
    assert behind.paths == ["/predictions/m", "/predictions/m/2.0/extra", "/ping"]


def test_errors_get_the_error_body_with_their_status_and_retry_after() -> None:
    client, _, _ = _lane(Unavailable("busy", retry_after_s=1))
    response = client.post("/predictions/m", content=b"x")
    assert response.status_code == 503
    assert response.json() == {"error": "busy", "code": 503}
    assert response.headers["Retry-After"] == "1"
    client, _, _ = _lane(BadRequest("not a tensor"))
    assert client.post("/predictions/m", content=b"x").json() == {
        "error": "not a tensor",
        "code": 400,
    }


def test_an_unknown_model_or_version_is_404_without_reaching_predict() -> None:
    client, behind, asked = _lane()
    for path in ("/predictions/nope", "/predictions/m/9.9"):
        response = client.post(path, content=b"x")
        assert response.status_code == 404 and "is not served" in response.json()["error"]
    assert asked == [] and behind.paths == []


def test_an_unexpected_error_is_still_500_and_raised_for_the_server_log() -> None:
    client, _, _ = _lane(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        client.post("/predictions/m", content=b"x")
    # In the app, the outermost handler answers it with the error body.
    buggy = FakeModel("double")

    async def crash(request: object) -> object:
        raise RuntimeError("a bug")

    buggy.infer_timed = crash  # type: ignore[method-assign]
    app = create_inference_app(FakeRepository(buggy))
    response = TestClient(app, raise_server_exceptions=False).post(
        "/predictions/double", json=[1.0, 2.0, 3.0]
    )
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error", "code": 500}
