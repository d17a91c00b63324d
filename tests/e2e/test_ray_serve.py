"""Packrat on Ray Serve, on a local Ray cluster of two 1-CPU nodes (each node's processes
pinned to its own CPU, as two machines would be): one replica per node on disjoint cores,
Triton's client through Ray's HTTP proxy, a killed replica replaced without leftover workers,
and a shutdown that leaves nothing."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil
import pytest
import torch

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
httpclient = pytest.importorskip("tritonclient.http")

from ray.cluster_utils import Cluster  # noqa: E402

from packrat.models import ZooSource  # noqa: E402
from packrat.pool.affinity import process_is_gone  # noqa: E402
from packrat.ray import build_app  # noqa: E402

MODEL = "tiny-resnet"
SHAPE = (3, 32, 32)
# A pinned plan: each replica starts without profiling (planning is tested on its own).
ARGS = {
    "model": MODEL,
    "num_replicas": "2",
    "max_batch_size": "4",
    "backend": "torch",
    "plan": "<1,1,4>",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


CLUSTER_TRIES = 3


def start_cluster(cpus: list[int]) -> Cluster:
    """A head node on `cpus[0]` and a second node on `cpus[1]`. Ray gives a node 30 s to
    register (not configurable), which a loaded 2-core machine can miss: a failed start's
    processes are stopped and it is tried again, `CLUSTER_TRIES` times in all."""
    everything = os.sched_getaffinity(0)
    for attempt in range(1, CLUSTER_TRIES + 1):
        before = {child.pid for child in psutil.Process().children(recursive=True)}
        try:
            # Each node's raylet, and so every worker it starts, inherits this process's affinity.
            os.sched_setaffinity(0, {cpus[0]})
            cluster = Cluster(
                initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
            )
            os.sched_setaffinity(0, {cpus[1]})
            cluster.add_node(num_cpus=1)
            return cluster
        except Exception:
            if attempt == CLUSTER_TRIES:
                raise
            started = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
            for child in started:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            psutil.wait_procs(started, timeout=30)
        finally:
            os.sched_setaffinity(0, everything)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs: one per simulated node")
    os.environ["PACKRAT_CACHE_DIR"] = str(tmp_path_factory.mktemp("ray-cache"))
    cluster = start_cluster(cpus[:2])
    ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
    try:
        yield cluster
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def proxy(cluster: Cluster) -> Iterator[str]:
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(dict(ARGS, metrics_port="0")), name="packrat", route_prefix="/")
    yield f"127.0.0.1:{port}"


def replicas(count: int) -> dict[int, dict[str, Any]]:
    """`describe()` of each replica, by pid, once `count` distinct ones have answered."""
    handle = serve.get_app_handle("packrat")
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 180.0
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only {len(seen)} replicas answered"
        info = handle.describe.remote().result()
        seen[info["pid"]] = info
    return seen


def worker_pids(info: dict[str, Any]) -> list[int]:
    return [i["pid"] for model in info["models"] for i in model["instances"]]


def test_one_replica_per_node_on_disjoint_cores(proxy: str) -> None:
    described = list(replicas(2).values())
    cores = [
        {c for m in r["models"] for i in m["instances"] for c in i["cores"]} for r in described
    ]
    assert cores[0] and cores[1] and not cores[0] & cores[1], cores
    assert [r["cpus"] for r in described] != [described[0]["cpus"]] * 2
    for info in described:
        assert info["metrics"] is not None
        (model,) = info["models"]
        assert model["name"] == MODEL and model["state"] == "running"


def test_tritonclient_through_the_proxy_matches_a_direct_run(proxy: str) -> None:
    inputs = np.random.default_rng(3).standard_normal((3, *SHAPE)).astype(np.float32)
    client = httpclient.InferenceServerClient(url=proxy)
    try:
        assert client.is_server_ready() and client.is_model_ready(MODEL)
        tensor = httpclient.InferInput("input0", list(inputs.shape), "FP32")
        tensor.set_data_from_numpy(inputs)
        answer = client.infer(MODEL, [tensor]).as_numpy("output0")
    finally:
        client.close()
    handler = ZooSource(MODEL).load()
    with torch.inference_mode():
        direct = handler.handle([torch.from_numpy(row) for row in inputs])
    expected = np.stack([np.asarray(out) for out in direct])
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)


def test_a_killed_replica_is_replaced_and_its_workers_are_gone(proxy: str) -> None:
    before = replicas(2)
    victim_pid, victim = next(iter(before.items()))
    names = [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith("SERVE_REPLICA::")
    ]
    killed = False
    for name in names:
        actor = ray.get_actor(name, namespace="serve")
        if ray.get(actor.__ray_call__.remote(lambda self: os.getpid())) == victim_pid:
            ray.kill(actor, no_restart=True)
            killed = True
    assert killed, names
    wait_for(lambda: process_is_gone(victim_pid), "the killed replica to exit", 30.0)
    wait_for(
        lambda: all(process_is_gone(pid) for pid in worker_pids(victim)),
        "the killed replica's workers to exit",
        30.0,
    )
    after = replicas(2)
    assert victim_pid not in after
    wait_for(lambda: serve.status().applications["packrat"].status == "RUNNING", "RUNNING")


def test_shutdown_leaves_no_worker(proxy: str) -> None:
    pids = [pid for info in replicas(2).values() for pid in [info["pid"], *worker_pids(info)]]
    serve.delete("packrat")
    wait_for(lambda: all(process_is_gone(pid) for pid in pids), "every replica and worker to exit")
