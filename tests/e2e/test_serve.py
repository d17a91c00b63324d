"""`packrat serve` as users run it: a real server on free ports, every endpoint, then SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from packrat.models import ZooSource
from packrat.pool.affinity import process_is_gone
from packrat.types import parse_plan

from .server import RunningServer, packrat_serve

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHAPE = (3, 32, 32)  # tiny-resnet's per-request input


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("serve")
    with packrat_serve("tiny-resnet", "--max-batch-size", "4", workdir=workdir) as running:
        yield running
    # The module's last check: SIGTERM drained and exited 0 (see test_sigterm_...).


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def reference(x: np.ndarray) -> np.ndarray:
    handler = ZooSource("tiny-resnet").load()
    out = handler.handle([torch.from_numpy(x)])[0]
    return np.asarray(out)


def test_startup_prints_plan_and_addresses(server: RunningServer) -> None:
    assert "serving tiny-resnet v1: plan <" in server.output
    for name in ("inference", "management", "metrics"):
        assert server.urls[name].startswith("http://127.0.0.1:")


def test_ping_and_raw_tensor_prediction(server: RunningServer) -> None:
    assert httpx.get(server.inference + "/ping").json() == {"status": "Healthy"}
    x = image(1)
    r = httpx.post(
        server.inference + "/predictions/tiny-resnet",
        content=x.tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()), reference(x), rtol=1e-4, atol=1e-4)
    versioned = httpx.post(server.inference + "/predictions/tiny-resnet/1", content=x.tobytes())
    assert versioned.status_code == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_torchserve_style_curl_upload(server: RunningServer, tmp_path: Path) -> None:
    x = image(2)
    path = tmp_path / "x.bin"
    path.write_bytes(x.tobytes())
    out = subprocess.run(
        ["curl", "-sf", "-T", str(path), server.inference + "/predictions/tiny-resnet"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    np.testing.assert_allclose(np.array(eval(out.stdout)), reference(x), rtol=1e-4, atol=1e-4)


def test_concurrent_clients_get_their_own_answers(server: RunningServer) -> None:
    inputs = [image(10 + i) for i in range(12)]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.inference, timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/predictions/tiny-resnet", content=x.tobytes()) for x in inputs)
            )

    for x, r in zip(inputs, asyncio.run(run()), strict=True):
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()), reference(x), rtol=1e-4, atol=1e-4)


def test_kserve_v2_with_tritonclient(server: RunningServer) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(server.inference.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny-resnet")
    meta = client.get_model_metadata("tiny-resnet")
    assert meta["inputs"][0]["shape"] == [-1, *SHAPE]
    batch = np.stack([image(20), image(21)])
    inp = triton.InferInput(meta["inputs"][0]["name"], list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    result = client.infer("tiny-resnet", [inp])
    out = result.as_numpy(meta["outputs"][0]["name"])
    np.testing.assert_allclose(out[1], reference(batch[1]), rtol=1e-4, atol=1e-4)
    assert out.shape[0] == 2


def test_kserve_v2_over_grpc_with_tritonclient(server: RunningServer) -> None:
    """The gRPC API answers as the HTTP one; Triton's extensions are UNIMPLEMENTED."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    assert "grpc API listening on 127.0.0.1:" in server.output
    with triton.InferenceServerClient(server.grpc) as client:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("tiny-resnet") and client.is_model_ready("tiny-resnet", "1")
        assert client.get_server_metadata(as_json=True)["name"] == "packrat"
        meta = client.get_model_metadata("tiny-resnet", as_json=True)
        assert meta["inputs"] == [
            {"name": "input0", "datatype": "FP32", "shape": ["-1", *map(str, SHAPE)]}
        ]
        batch = np.stack([image(22), image(23), image(24)])
        inp = triton.InferInput("x", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)  # raw_input_contents, as tritonclient always sends
        result = client.infer("tiny-resnet", [inp], request_id="r1")
        assert result.get_response().id == "r1"
        tensor = {"name": "x", "shape": list(batch.shape), "datatype": "FP32"}
        body = {"inputs": [tensor | {"data": batch.ravel().tolist()}]}
        http = httpx.post(server.inference + "/v2/models/tiny-resnet/infer", json=body)
        (output,) = http.json()["outputs"]
        answer = result.as_numpy("output0")
        assert answer.shape == tuple(output["shape"]) == (3, 10)
        expected = np.array(output["data"]).reshape(3, 10)
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
        with pytest.raises(InferenceServerException) as missing:
            client.infer("no-such-model", [inp])
        assert missing.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as config:
            client.get_model_config("tiny-resnet")
        assert config.value.status() == "StatusCode.UNIMPLEMENTED"


def test_48_concurrent_grpc_requests_all_answered_correctly(server: RunningServer) -> None:
    import tritonclient.grpc as triton

    handler = ZooSource("tiny-resnet").load()
    inputs = [image(30 + i) for i in range(48)]
    results: dict[int, Any] = {}
    done = threading.Event()
    lock = threading.Lock()

    def on_answer(i: int) -> Callable[[Any, Any], None]:
        def callback(result: Any, error: Any) -> None:
            with lock:
                results[i] = error if error is not None else result.as_numpy("output0")
                if len(results) == len(inputs):
                    done.set()

        return callback

    with triton.InferenceServerClient(server.grpc) as client:
        for i, x in enumerate(inputs):
            inp = triton.InferInput("x", [1, *SHAPE], "FP32")
            inp.set_data_from_numpy(x[None])
            client.async_infer("tiny-resnet", [inp], callback=on_answer(i))
        assert done.wait(timeout=60), f"{len(results)} of {len(inputs)} answered"
    expected = handler.handle([torch.from_numpy(x) for x in inputs])
    for i in range(len(inputs)):
        assert isinstance(results[i], np.ndarray), results[i]
        np.testing.assert_allclose(results[i][0], np.asarray(expected[i]), rtol=1e-4, atol=1e-4)


def test_management_describe_register_unregister(server: RunningServer) -> None:
    models = httpx.get(server.management + "/models").json()["models"]
    assert [m["modelName"] for m in models] == ["tiny-resnet"]
    (described,) = httpx.get(server.management + "/models/tiny-resnet").json()
    cores = [c for i in described["instances"] for c in i["cores"]]
    assert described["plan"]["describe"].startswith("<") and len(cores) == len(set(cores))
    r = httpx.post(server.management + "/models", params={"url": "tiny-bert"}, timeout=180)
    assert r.status_code == 200, r.text
    tokens = httpx.post(server.inference + "/predictions/tiny-bert", json=list(range(1, 17)))
    assert tokens.status_code == 200, tokens.text
    assert np.array(tokens.json()).shape == (16, 64)
    assert httpx.delete(server.management + "/models/tiny-bert").status_code == 200
    gone = httpx.post(server.inference + "/predictions/tiny-bert", json=[1, 2])
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "JSON"),
        (b"\x00" * 12, {"Content-Type": "application/octet-stream"}, 400, "bytes"),
        (b"[[1.5]]", {"Content-Type": "application/json"}, 400, "shape"),
        (b"hello", {"Content-Type": "application/x-unknown"}, 415, "content type"),
    ],
)
def test_bad_input_is_a_named_4xx(
    server: RunningServer, body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    r = httpx.post(server.inference + "/predictions/tiny-resnet", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["error"].lower()
    ok = httpx.post(server.inference + "/predictions/tiny-resnet", content=image(3).tobytes())
    assert ok.status_code == 200, "the server keeps serving"


def test_unknown_model_and_oversize_body(server: RunningServer) -> None:
    assert httpx.post(server.inference + "/predictions/nope", json=[1]).status_code == 404
    assert httpx.post(server.inference + "/predictions/tiny-resnet/9", json=[1]).status_code == 404
    big = httpx.post(server.inference + "/predictions/tiny-resnet", content=b"0" * (17 << 20))
    assert big.status_code == 413


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_pin_a_plan_and_release_it_over_http(server: RunningServer) -> None:
    """`curl -X PUT -d` (form content type) pins the fat plan and releases it: describe, the
    switch log and /metrics show it, and predictions stay right throughout."""
    management, form = server.management, {"Content-Type": "application/x-www-form-urlencoded"}
    (before,) = httpx.get(management + "/models/tiny-resnet").json()
    assert before["policy"] == "auto"
    # A pin returns once its plan serves, and a plan whose workers are not started yet waits
    # for them (seconds): OpenVINO's workers are started on each layout they run.
    put = functools.partial(httpx.put, timeout=120.0)
    thin = put(management + "/models/tiny-resnet/plan", json={"plan": "<2,1,2>"})
    assert thin.status_code == 200, thin.text  # then "fat" is sure to be a switch
    r = put(management + "/models/tiny-resnet/plan", content=b'{"plan": "fat"}', headers=form)
    assert r.status_code == 200, r.text
    pinned = r.json()["model"]
    assert pinned["policy"] == "pinned" and pinned["plan"]["describe"].startswith("<1,")
    assert len(pinned["instances"]) == 1
    x = image(7)
    url = server.inference + "/predictions/tiny-resnet"
    raw = {"Content-Type": "application/octet-stream"}
    answer = httpx.post(url, content=x.tobytes(), headers=raw)
    np.testing.assert_allclose(np.array(answer.json()), reference(x), rtol=1e-4, atol=1e-4)
    r = put(management + "/models/tiny-resnet/plan", json={"policy": "auto"})
    assert r.status_code == 200 and r.json()["model"]["policy"] == "auto"
    bad = put(management + "/models/tiny-resnet/plan", json={"plan": "<9,1,1>"})
    assert bad.status_code == 400 and "needs 9 cores" in bad.json()["error"]
    switches = httpx.get(management + "/models/tiny-resnet/switches").json()
    assert "pinned" in [s["reason"] for s in switches]
    assert all(s["took_ms"] >= 0 for s in switches)
    # Workers that move in place stay as spares, so a switch starts workers only when the pool
    # is too small (it starts with the workers of every optimal plan): at most those of a plan
    # beyond the instances of every plan before it. The pinned <2,1,2> may be one, or an auto
    # plan for 2 requests, once the served batches corrected the profile (`recalibrate`). A
    # backend whose workers cannot move (OpenVINO) has one on each layout of those plans, so
    # the pinned plans may need theirs: both of <2,1,2>'s, and fat's.
    started = [(s["to"], s["workers_started"]) for s in switches if s["workers_started"]]
    if "openvino" not in str((before.get("backend") or {}).get("backend")):
        most = len(parse_plan(switches[0]["from"]).instances) if switches else 0
        for s in switches:
            wanted = len(parse_plan(s["to"]).instances)
            assert s["workers_started"] <= max(0, wanted - most), (s, most)
            most = max(most, wanted)
    else:
        pinned_plans = {"<2,1,2>": 2, pinned["plan"]["describe"]: 1}
        assert all(count <= pinned_plans.get(to, 0) for to, count in started), started
    text = httpx.get(server.metrics + "/metrics").text
    assert _sample(text, "packrat_reconfigurations_total", "tiny-resnet") == len(switches)


def test_metrics_and_openapi(server: RunningServer) -> None:
    text = httpx.get(server.metrics + "/metrics").text
    assert 'packrat_requests_total{code="200",model="tiny-resnet"}' in text
    assert "packrat_batch_size_bucket" in text and "packrat_plan{" in text
    assert "packrat_queue_depth" in text and "packrat_instance_busy_seconds_total" in text
    paths = httpx.get(server.inference + "/openapi.json").json()["paths"]
    assert "/predictions/{model_name}" in paths and "/v2/models/{model_name}/infer" in paths


def test_a_token_file_guards_both_apis(tmp_path: Path) -> None:
    token = "e2e-token-0123456789abcdef"
    (tmp_path / "token.txt").write_text(token + "\n")
    args = (str(FIXTURES / "server_marker_handler.py"), "--token-file", str(tmp_path / "token.txt"))
    with packrat_serve(*args, "--plan", "<1,1,1>", workdir=tmp_path) as running:
        assert "require the API token" in running.output and token not in running.output
        url = running.inference + "/predictions/server_marker_handler"
        assert httpx.post(url, json=2.5).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.post(url, json=2.5, headers=auth).json() == 5.0
        assert httpx.get(running.management + "/models").status_code == 401
        assert httpx.get(running.management + "/models", headers=auth).status_code == 200
        assert httpx.get(running.inference + "/ping").status_code == 200
        assert running.stop() == 0, running.output


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    with packrat_serve(
        str(FIXTURES / "server_marker_handler.py"), "--max-batch-size", "4", workdir=tmp_path
    ) as running:
        (described,) = httpx.get(running.management + "/models/server_marker_handler").json()
        pids = [i["pid"] for i in described["instances"]]
        ok = httpx.post(running.inference + "/predictions/server_marker_handler", json=2.5)
        assert ok.status_code == 200 and ok.json() == 5.0
        failed = httpx.post(running.inference + "/predictions/server_marker_handler", json=-1.0)
        assert failed.status_code == 500 and "marker request" in failed.json()["error"]
        assert running.stop() == 0, running.output
    assert "packrat: stopped" in running.output
    assert all(process_is_gone(pid) for pid in pids)


def test_sigterm_under_load_finishes_in_flight_requests_and_refuses_new_ones(
    tmp_path: Path,
) -> None:
    """Requests running when SIGTERM comes are answered; requests sent during the drain get
    503 at once; the server exits 0 and leaves no worker."""
    slow = 3000.0  # the marker handler takes 2 s on it
    with packrat_serve(
        str(FIXTURES / "server_marker_handler.py"), "--plan", "<1,1,1>", workdir=tmp_path
    ) as running:
        url = running.inference + "/predictions/server_marker_handler"
        (described,) = httpx.get(running.management + "/models/server_marker_handler").json()
        pids = [i["pid"] for i in described["instances"]]

        async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                in_flight = [asyncio.create_task(client.post(url, json=slow)) for _ in range(2)]
                await asyncio.sleep(0.5)  # both sent: one runs, one waits in the queue
                running.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                refused = await client.post(url, json=1.0)
                ping = await client.get(running.inference + "/ping")
                return list(await asyncio.gather(*in_flight)), refused, ping

        answered, refused, ping = asyncio.run(scenario())
        assert [r.status_code for r in answered] == [200, 200]
        assert [r.json() for r in answered] == [2 * slow, 2 * slow]
        assert refused.status_code == 503 and "not ready" in refused.json()["error"]
        assert ping.status_code == 503
        assert running.process.wait(timeout=60) == 0, running.output
    assert all(process_is_gone(pid) for pid in pids)


def _batch_histogram(metrics_text: str, model: str) -> dict[float, float]:
    """Cumulative counts of the batch-size histogram by upper bound."""
    counts: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("packrat_batch_size_bucket{") and f'model="{model}"' in line:
            bound = line.split('le="')[1].split('"')[0]
            counts[float(bound)] = float(line.rsplit(" ", 1)[1])
    return counts


def _sample(metrics_text: str, name: str, model: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {model} not in /metrics")


def test_closed_loop_load_forms_full_batches_on_the_plan(tmp_path: Path) -> None:
    """2 x max_batch_size closed-loop clients: batches form at max_batch_size, and the plan
    in use (made for that size) is the one /metrics reports."""
    max_batch = 4
    with packrat_serve(
        "tiny-resnet",
        "--max-batch-size",
        str(max_batch),
        "--max-batch-delay",
        "50",
        workdir=tmp_path,
    ) as running:
        (described,) = httpx.get(running.management + "/models/tiny-resnet").json()
        assert described["plan"]["batch"] == max_batch
        body = image(5).tobytes()

        async def client(n: int) -> None:
            async with httpx.AsyncClient(base_url=running.inference, timeout=60) as c:
                for _ in range(n):
                    r = await c.post("/predictions/tiny-resnet", content=body)
                    assert r.status_code == 200

        async def load() -> None:
            await asyncio.gather(*(client(15) for _ in range(2 * max_batch)))

        asyncio.run(load())
        text = httpx.get(running.metrics + "/metrics").text
        # The plan for that size may have changed since the start: the served batches correct
        # the profile (`recalibrate`), and the plans are made again on it.
        (described,) = httpx.get(running.management + "/models/tiny-resnet").json()
    hist = _batch_histogram(text, "tiny-resnet")
    batches = hist[float("inf")]
    requests = _sample(text, "packrat_batch_size_sum", "tiny-resnet")
    assert requests >= 2 * max_batch * 15  # every request went through a batch
    assert requests / batches >= 0.9 * max_batch, hist  # batches formed at the configured size
    assert hist[float(max_batch // 2)] / batches <= 0.1, hist
    assert described["plan"]["batch"] == max_batch
    assert f'packrat_plan{{model="tiny-resnet",plan="{described["plan"]["describe"]}"}} 1.0' in text
