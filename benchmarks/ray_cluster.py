"""Packrat on a local two-node Ray cluster: requests, failures and replica restart time
(issue 18).

    python benchmarks/ray_cluster.py [--model tiny-resnet] [--clients 8] [--seconds 30]
        [--backend torch] [--max-batch-size 8]

Starts a Ray cluster of two 1-CPU nodes on this machine (each node's processes pinned to its
own CPU, as two machines would be), deploys `packrat.ray:build_app` with one replica per node
behind Ray's HTTP proxy, then:

1. steady load: `--clients` closed-loop clients post raw tensors to
   `/predictions/MODEL` through the proxy for `--seconds`;
2. the same load while one replica is killed (`ray.kill`) a third of the way in: failures,
   and the time until Ray has the replica back (application RUNNING with two replicas, the new
   one answering);
3. shutdown: the time `serve.delete` takes and whether any replica or worker process is left.

Prints a Markdown summary. The load generator shares the two CPUs with the cluster: latency
figures are this machine's, not a production cluster's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import ray
from ray import serve
from ray.cluster_utils import Cluster

from packrat.models import ZooSource
from packrat.pool.affinity import process_is_gone
from packrat.ray import build_app


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    failures: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, ms: float) -> None:
        with self.lock:
            if status == 200:
                self.latencies_ms.append(ms)
            else:
                self.failures[status] = self.failures.get(status, 0) + 1

    def row(self, name: str, seconds: float) -> str:
        done = len(self.latencies_ms)
        failed = sum(self.failures.values())
        ms = sorted(self.latencies_ms) or [float("nan")]
        p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
        return (
            f"| {name} | {done + failed} | {failed} {dict(self.failures) or ''} | "
            f"{done / seconds:.1f} | {statistics.median(ms):.1f} | {p99:.1f} |"
        )


def load(url: str, body: bytes, clients: int, seconds: float, tally: Tally) -> None:
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=30.0) as http:
            while time.monotonic() < stop:
                start = time.monotonic()
                try:
                    status = http.post(
                        url, content=body, headers={"content-type": "application/octet-stream"}
                    ).status_code
                except httpx.HTTPError:
                    status = -1
                tally.add(status, (time.monotonic() - start) * 1000.0)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def replicas(count: int) -> dict[int, dict[str, Any]]:
    handle = serve.get_app_handle("packrat")
    seen: dict[int, dict[str, Any]] = {}
    while len(seen) < count:
        info = handle.describe.remote().result()
        seen[info["pid"]] = info
    return seen


def kill_replica(pid: int) -> None:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith("SERVE_REPLICA::"):
            handle = ray.get_actor(actor["name"], namespace="serve")
            if ray.get(handle.__ray_call__.remote(lambda self: os.getpid())) == pid:
                ray.kill(handle, no_restart=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-resnet")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--max-batch-size", default="8")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    started = time.monotonic()
    os.sched_setaffinity(0, {cpus[0]})
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    os.sched_setaffinity(0, {cpus[1]})
    cluster.add_node(num_cpus=1)
    os.sched_setaffinity(0, set(cpus))
    ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
    cluster_s = time.monotonic() - started
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    deploy_at = time.monotonic()
    app_args = {
        "model": args.model,
        "num_replicas": "2",
        "backend": args.backend,
        "max_batch_size": args.max_batch_size,
        "metrics_port": "0",
    }
    serve.run(build_app(app_args), name="packrat", route_prefix="/")
    deploy_s = time.monotonic() - deploy_at
    url = f"http://127.0.0.1:{args.port}/predictions/{args.model}"
    example = ZooSource(args.model).load().example_requests(1)[0]
    body = np.ascontiguousarray(example.numpy()).tobytes()

    steady = Tally()
    load(url, body, args.clients, args.seconds, steady)

    before = replicas(2)
    victim = next(iter(before))
    killing = Tally()
    loader = threading.Thread(target=load, args=(url, body, args.clients, args.seconds, killing))
    loader.start()
    time.sleep(args.seconds / 3)
    killed_at = time.monotonic()
    kill_replica(victim)
    while True:
        status = serve.status().applications["packrat"]
        running = status.deployments["packrat"].replica_states.get("RUNNING", 0)
        if status.status == "RUNNING" and running == 2 and victim not in replicas(2):
            break
        time.sleep(0.2)
    restart_s = time.monotonic() - killed_at
    loader.join()

    after = replicas(2)
    pids = [
        pid
        for info in after.values()
        for pid in [info["pid"]] + [i["pid"] for m in info["models"] for i in m["instances"]]
    ]
    delete_at = time.monotonic()
    serve.delete("packrat")
    while not all(process_is_gone(pid) for pid in pids) and time.monotonic() - delete_at < 60:
        time.sleep(0.2)
    delete_s = time.monotonic() - delete_at
    left = [pid for pid in pids if not process_is_gone(pid)]
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()

    print(
        f"Model {args.model} (backend {args.backend}, max batch {args.max_batch_size}), "
        f"{args.clients} closed-loop clients, {args.seconds:g} s per phase; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n"
    )
    print(
        f"- cluster of two 1-CPU nodes up in {cluster_s:.1f} s; application RUNNING "
        f"{deploy_s:.1f} s after `serve.run` (two replicas, profiling on first start)"
    )
    print(
        f"- replica killed: back (two RUNNING replicas, the new one answering) after "
        f"{restart_s:.1f} s"
    )
    print(
        f"- `serve.delete`: every replica and worker process gone after {delete_s:.1f} s; "
        f"left: {left or 'none'}\n"
    )
    print("| phase | requests | failures | answered/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(steady.row("steady", args.seconds))
    print(killing.row("one replica killed", args.seconds))


if __name__ == "__main__":
    main(sys.argv[1:])
