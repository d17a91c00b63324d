"""The servers benchmarks/serve_overhead.py measures: `packrat serve --fat` and TorchServe
with one worker, each at batch size 1, loaded by the client, with their own timings (metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.client import metric, scrape
from harness.serve import packrat_serve
from harness.serve_overhead.client import CLIENTS, ClientRun, ping_latency, run_client
from harness.serve_overhead.timing import WARMUP_REQUESTS, Latency
from harness.torchserve import TorchServeModel, export_and_archive, log_evidence, torchserve


@dataclass
class ServerRun:
    client: ClientRun  # CLIENTS[0]; the server's metrics cover exactly its requests
    ping: Latency
    other_clients: dict[str, ClientRun] = field(default_factory=dict)  # the rest of CLIENTS
    server: dict[str, float] = field(default_factory=dict)  # mean ms of server-side spans
    notes: list[str] = field(default_factory=list)


def run_packrat(model: str, body: bytes, requests: int, workdir: Path) -> ServerRun:
    # The fat instance, one request per batch.
    options = ["--fat", "--max-batch-size", "1"]
    with packrat_serve(model, options, workdir, workdir / f"packrat-{model}.log") as server:
        urls = server.urls
        described = httpx.get(f"{urls['management']}/models/{model}").json()
        plan = described[0] if isinstance(described, list) else described
        url = f"{urls['inference']}/predictions/{model}"
        run_client(url, body, WARMUP_REQUESTS)  # also warms the worker's graph executor
        before = scrape(urls["metrics"] + "/metrics")
        client = run_client(url, body, requests)
        after = scrape(urls["metrics"] + "/metrics")
        others = {kind: run_client(url, body, requests, kind) for kind in CLIENTS[1:]}
        ping = ping_latency(urls["inference"] + "/ping")

    def delta(name: str, *labels: str) -> float:
        return metric(after, name, *labels) - metric(before, name, *labels)

    label = f'model="{model}"'
    count = delta("packrat_request_latency_seconds_count", label)
    batches = delta("packrat_batch_size_count", label)
    run = ServerRun(client, ping, others)
    run.server = {
        "request_ms": 1000.0 * delta("packrat_request_latency_seconds_sum", label) / count,
        "batch_ms": 1000.0 * delta("packrat_batch_latency_seconds_sum", label) / batches,
        "compute_ms": 1000.0 * delta("packrat_instance_busy_seconds_total", label) / batches,
    }
    instances = [(i["threads"], i["cores"], i["pid"]) for i in plan["instances"]]
    run.notes.append(
        f"plan {plan['plan']['describe']}, instances (threads, cores, pid) {instances}"
    )
    return run


def run_torchserve(model: str, body: bytes, requests: int, workdir: Path, venv: Path) -> ServerRun:
    tsdir = workdir / f"torchserve-{model}"
    store = tsdir / "store"
    export_and_archive(model, store, workdir, venv)
    # Its handler writes each answer with orjson from the numpy row, as Packrat's server does:
    # both spend the same on JSON (TorchServe's usual tolist() + json.dumps costs more).
    served = TorchServeModel(model, env={"RAW_HANDLER_JSON": "orjson"})
    with torchserve(served, tsdir, store, venv) as server:
        urls = server.urls
        described = httpx.get(f"{urls['management']}/models/{model}").json()[0]
        url = f"{urls['inference']}/predictions/{model}"
        run_client(url, body, WARMUP_REQUESTS)
        before = scrape(urls["metrics"] + "/metrics")
        client = run_client(url, body, requests)
        after = scrape(urls["metrics"] + "/metrics")
        others = {kind: run_client(url, body, requests, kind) for kind in CLIENTS[1:]}
        ping = ping_latency(urls["inference"] + "/ping")
    label = f'model_name="{model}"'

    def delta_ms(name: str) -> float:
        return (metric(after, name, label) - metric(before, name, label)) / 1000.0

    count = metric(after, "ts_inference_requests_total", label) - metric(
        before, "ts_inference_requests_total", label
    )
    run = ServerRun(client, ping, others)
    if count:
        run.server = {
            "inference_ms": delta_ms("ts_inference_latency_microseconds") / count,
            "queue_ms": delta_ms("ts_queue_latency_microseconds") / count,
        }
    worker = described["workers"][0]
    run.notes.append(
        f"batchSize {described['batchSize']}, maxBatchDelay {described['maxBatchDelay']} ms, "
        f"worker {worker['id']} pid {worker['pid']} {worker['status']}; "
        f"TorchServe processes while serving: {len(server.pids)}"
    )
    run.notes.extend(log_evidence(server.logs))
    run.notes.append(f"processes of this TorchServe left after --stop: {len(server.leftover_pids)}")
    return run
