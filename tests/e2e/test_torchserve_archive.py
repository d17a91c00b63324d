"""A TorchServe archive, served by Packrat, answers as TorchServe 0.12 answers (issue 19).

The archive is what a TorchServe user has: a TorchScript ResNet-50 and a BaseHandler subclass
in TorchServe's usual style (PIL decode, torch resize and normalisation, top-5 classes by name
through map_class_to_label and index_to_name.json), built with torch-model-archiver. Both
servers get the same JPEGs, as `curl -T` and as `curl -F data=@`; then Packrat gets a burst
of requests, which its plan of two instances splits between them. A second archive's handler
fails in each way TorchServe's worker tells apart; both servers must answer each failure with
the same status and body, and go on serving.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .server import packrat_serve
from .torchserve_server import torchserve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from torchserve_archives import build_failing_archive, build_image_archive, jpeg  # noqa: E402

pytestmark = pytest.mark.slow

IMAGES = [jpeg(seed, size=96) for seed in (1, 2, 3)]
MODEL = "resnet50"
FAILING = "failing"
# What failing_handler.py does on each body; `ok` last: the worker is still there.
FAILURES = ["predict", "memory", "cuda", "boom", "notalist", "short", "ok"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resnet-archive")
    config = {"batchSize": 4, "maxBatchDelay": 50, "minWorkers": 1, "maxWorkers": 1}
    build_image_archive(MODEL, MODEL, root / "store", image_size=224, config=config)
    build_failing_archive(FAILING, root / "store")
    return root / "store"


Answer = tuple[int, str | None, bytes]  # status, content type, body


@pytest.fixture(scope="module")
def torchserve_answers(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """TorchServe's answers, started once for both archives: the images' (`_ask`) under
    MODEL, each of FAILURES' under FAILING. Stopped before Packrat starts."""
    workdir = tmp_path_factory.mktemp("torchserve")
    models = f"{MODEL}={MODEL}.mar,{FAILING}={FAILING}.mar"
    with torchserve(store, models, workdir=workdir) as ts:
        return {MODEL: _ask(ts.inference), FAILING: _ask_to_fail(ts.inference)}


def _ask(base: str) -> list[tuple[int, bytes]]:
    """Each image as the body (`curl -T`), then the first as a form field (`curl -F`)."""
    url = f"{base}/predictions/{MODEL}"
    with httpx.Client(timeout=120.0) as client:
        answers = [client.post(url, content=image) for image in IMAGES]
        form = {"data": ("kitten.jpg", IMAGES[0], "image/jpeg")}
        answers.append(client.post(url, files=form))
    return [(answer.status_code, answer.content) for answer in answers]


def _ask_to_fail(base: str) -> list[Answer]:
    """Each of FAILURES as the body, one at a time."""
    url = f"{base}/predictions/{FAILING}"
    with httpx.Client(timeout=60.0) as client:
        answers = [client.post(url, content=body.encode()) for body in FAILURES]
    return [(a.status_code, a.headers.get("content-type"), a.content) for a in answers]


def _same_json(ours: bytes, theirs: bytes) -> None:
    """The same classes in the same order with the same probabilities (to float32 noise:
    the two servers batch and thread the model differently)."""
    mine, expected = json.loads(ours), json.loads(theirs)
    assert list(mine) == list(expected)
    assert list(mine.values()) == pytest.approx(list(expected.values()), rel=1e-4)


def _busy_seconds(metrics_url: str) -> dict[str, float]:
    text = httpx.get(f"{metrics_url}/metrics", timeout=10.0).text
    return {
        sample.labels["instance"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "packrat_instance_busy_seconds_total"
        and sample.labels.get("model") == MODEL
    }


def test_an_archive_answers_as_torchserve_and_splits_its_batches(
    store: Path, torchserve_answers: dict[str, list], tmp_path: Path
) -> None:
    theirs = torchserve_answers[MODEL]
    assert [status for status, _ in theirs] == [200] * len(theirs), theirs

    plan = ("--plan", "<2,1,2>")  # two instances: a batch of 4 is split 2 + 2
    args = (str(store / f"{MODEL}.mar"), *plan, "--no-grpc")
    with packrat_serve(*args, workdir=tmp_path) as server:
        ours = _ask(server.inference)
        url = f"{server.inference}/predictions/{MODEL}"
        with ThreadPoolExecutor(8) as pool:
            burst = list(pool.map(lambda i: httpx.post(url, content=IMAGES[i % 3], timeout=120.0),
                                  range(16)))  # fmt: skip
        busy = _busy_seconds(server.metrics)
        described = httpx.get(f"{server.management}/models/{MODEL}", timeout=10.0).json()[0]
    assert [status for status, _ in ours] == [200] * len(ours), ours
    for (_, mine), (_, expected) in zip(ours, theirs, strict=True):
        _same_json(mine, expected)
    assert [answer.status_code for answer in burst] == [200] * 16
    for answer in burst:
        _same_json(answer.content, ours[IMAGES.index(answer.request.content)][1])
    assert set(busy) == {"0", "1"} and all(seconds > 0 for seconds in busy.values()), busy
    assert described["batchSize"] == 4 and described["maxBatchDelay"] == 50  # model-config.yaml
    assert "minWorkers, maxWorkers ignored" in server.output


def test_a_store_archive_profiles_on_its_sample_and_registers_by_url(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = {"batchSize": 2, "maxBatchDelay": 5}
    build_image_archive("tiny-resnet", "tinyres", store, image_size=32, config=config)
    args = ("tinyres.mar", "--model-store", str(store), "--no-grpc")
    with packrat_serve(*args, workdir=tmp_path) as server:
        url = f"{server.inference}/predictions/tinyres"
        body = httpx.post(url, content=IMAGES[0], timeout=60.0)
        form = httpx.post(url, files={"data": ("k.jpg", IMAGES[0], "image/jpeg")}, timeout=60.0)
        v2 = httpx.post(f"{server.inference}/v2/models/tinyres/infer", json={"inputs": []})
        registered = httpx.post(
            f"{server.management}/models",
            params={"url": "tinyres.mar", "model_name": "again", "batch_size": 8},
            timeout=120.0,
        )
        again = httpx.get(f"{server.management}/models/again", timeout=10.0).json()[0]
        other = httpx.post(f"{server.inference}/predictions/again", content=IMAGES[0])
    assert (body.status_code, form.status_code) == (200, 200)
    assert body.headers["content-type"] == "application/json"
    _same_json(form.content, body.content)
    assert len(json.loads(body.content)) == 5  # the handler's top-5
    assert v2.status_code == 400 and "TorchServe archive" in v2.text
    assert registered.status_code == 200, registered.text
    assert (again["batchSize"], again["requests"]) == (2, "torchserve")  # model-config wins
    assert other.status_code == 200
    _same_json(other.content, body.content)
    assert "profiling tinyres" in server.output  # on the archive's sample_request.jpg


def test_a_failing_handler_is_answered_as_torchserve_answers_it(
    store: Path, torchserve_answers: dict[str, list], tmp_path: Path
) -> None:
    theirs: list[Answer] = torchserve_answers[FAILING]
    # TorchServe's own answers, as its worker and frontend write them (checked here so that a
    # TorchServe release answering otherwise shows up as such, not as a Packrat bug).
    expected_statuses = [418, 507, 507, 503, 503, 503, 200]
    assert [status for status, _, _ in theirs] == expected_statuses, theirs
    assert json.loads(theirs[0][2])["type"] == "InternalServerException"
    args = (str(store / f"{FAILING}.mar"), "--plan", "<1,1,1>", "--no-grpc")
    with packrat_serve(*args, workdir=tmp_path) as server:
        ours = _ask_to_fail(server.inference)
    # Every failure's status, content type and bytes; the last request's answer and status
    # (its content type differs: TorchServe sends none for a handler's JSON).
    assert ours[:-1] == theirs[:-1]
    assert (ours[-1][0], ours[-1][2]) == (theirs[-1][0], theirs[-1][2])
    assert "Traceback" in server.output and "the handler's own message" in server.output
