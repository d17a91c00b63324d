"""Serving overhead at batch size 1 and low load: Packrat and TorchServe 0.12, side by side.

    python benchmarks/serve_overhead.py [--models tiny-resnet resnet50] [--requests-tiny 200]
        [--requests-large 80] [--ts-venv /tmp/ts-venv] [--no-torchserve] [--output PATH]
        [--workdir DIR]

(with the project's venv active; HF_HUB_OFFLINE=1 is set for the servers, and their cache
goes to the work directory).

For each model, one client sends sequential raw float32 requests (`application/octet-stream`)
over one keep-alive connection on loopback (the standard library's http.client, then httpx),
and

- in-process: the model is loaded in a child process the way a worker loads it
  (`ZooSource(name).load()`, torch threads = all usable cores, as the fat instance) and
  `handler.handle([x])` (preprocess + inference + postprocess) is timed;
- Packrat: `packrat serve MODEL --fat --max-batch-size 1` on free ports; e2e latency, and from
  its /metrics the server-side request time and the worker round trip per batch;
- TorchServe: the model exported with `packrat export` to TorchScript, archived with
  benchmarks/torchserve/raw_tensor_handler.py, served with one worker and batch size 1;
  its handler reports its own time per request (X-Handler-Ms) and writes each answer with
  orjson from the numpy row (RAW_HANDLER_JSON=orjson), the encoder Packrat's server uses.

overhead = e2e p50 - in-process p50, where in-process is each server's handler time for the
same requests, timed inside its worker and sent back in a response header. The
model measured apart, in-process, is reported too; it is not subtracted: on a shared machine
the model's speed drifts by several percent between runs, which differences across runs would
mistake for overhead. Each model also gets a breakdown of where the time goes, built from
differences within the server run (its /metrics against its client) and from steps timed
alone (decode, JSON encode, a pipe round trip of the pickled messages, an event-loop -> thread
hop).

Prints the report and writes it as Markdown (default docs/serve-overhead.md; the hand-written
analysis after the `<!-- analysis: ... -->` marker line of an existing file is kept). The
TorchServe venv is created if missing (needs network); the two modules its worker needs but
does not declare (pyyaml, numpy) are added. Takes about 90 s on 2 cores (most of it model
loading); nothing but loopback is used; every server started is stopped, and TorchServe's
processes are checked gone. --workdir keeps the logs (TorchServe's under torchserve-MODEL/logs).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from harness.client import metric, scrape
from harness.report import cpu_model, kept_analysis, package_versions
from harness.serve import packrat_serve
from harness.torchserve import (
    TorchServeModel,
    ensure_ts_venv,
    export_and_archive,
    log_evidence,
    torchserve,
)
from harness.torchserve import versions as torchserve_versions

REPO = Path(__file__).resolve().parents[1]
RAW = {"Content-Type": "application/octet-stream"}
WARMUP_REQUESTS = 20
IDLE_GAP_S = 0.002  # about the time a worker idles between two sequential requests
_COMPUTE = re.compile(r"\bcompute;dur=([0-9.]+)")


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Percentiles and mean of a set of samples, in milliseconds."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    count: int

    @classmethod
    def of(cls, samples_ms: list[float]) -> Latency:
        q = np.percentile(samples_ms, [50, 90, 99])
        mean_ms = statistics.fmean(samples_ms)
        return cls(float(q[0]), float(q[1]), float(q[2]), mean_ms, len(samples_ms))


def timed_ms(fn: Any, repeats: int, warmup: int = 5) -> Latency:
    """Latency of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000.0)
    return Latency.of(samples)


# --- in-process measurements (run in a child process: the client stays free of torch) ------


@dataclass(frozen=True)
class TimedZooSource:
    """A zoo model whose handler returns (output, milliseconds `handle` took) per request, so
    the time inside the worker can be told from the time around it. Picklable."""

    name: str

    def identity(self) -> Any:
        from packrat.models import ZooSource

        return ZooSource(self.name).identity()

    def load(self) -> Any:
        from packrat.models import ZooSource

        return _timed_handler(ZooSource(self.name).load())

    def start_runtime(self, cpus: int) -> None:
        """Nothing to start: a zoo model runs on torch, whose pool the worker sizes."""


def _timed_handler(inner: Any) -> Any:
    from packrat.models.base import Handler

    class TimedHandler(Handler):  # type: ignore[misc]  # Handler is imported lazily: Any
        def initialize(self) -> None:
            inner.initialize()

        def preprocess(self, requests: list[Any]) -> Any:
            return inner.preprocess(requests)

        def inference(self, batch: Any) -> Any:
            return inner.inference(batch)

        def postprocess(self, outputs: Any) -> list[Any]:
            return inner.postprocess(outputs)  # type: ignore[no-any-return]

        def example_requests(self, batch_size: int) -> list[Any]:
            return inner.example_requests(batch_size)  # type: ignore[no-any-return]

        def shared_tensors(self) -> dict[str, Any]:
            return inner.shared_tensors()  # type: ignore[no-any-return]

        def handle(self, requests: list[Any]) -> list[Any]:
            started = time.perf_counter()
            outputs = inner.handle(requests)
            handle_ms = (time.perf_counter() - started) * 1000.0
            return [(output, handle_ms) for output in outputs]

    return TimedHandler()


def in_process_child(model: str, requests: int) -> dict[str, Any]:
    """Handler time, and the server-side steps timed alone; JSON-ready. Imports torch."""
    import torch

    from packrat.models import ZooSource
    from packrat.server import codecs, output_codecs
    from packrat.server.responses import JSONBody

    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)  # what the fat instance's worker sets (and 1 inter-op thread)
    torch.set_num_interop_threads(1)
    source = ZooSource(model)
    handler = source.load()
    handler.initialize()
    x = handler.example_requests(1)[0]
    handle = timed_ms(lambda: handler.handle([x]), requests, warmup=WARMUP_REQUESTS)
    handle_idle = timed_after_idle(lambda: handler.handle([x]), requests, IDLE_GAP_S)
    output = handler.handle([x])[0]

    body = bytearray(x.numpy().tobytes())
    spec = source.input_spec
    chunks = [bytes(body[i : i + 65536]) for i in range(0, len(body), 65536)]

    def receive() -> bytearray:  # what read_body does with the body's chunks
        received = bytearray()
        for chunk in chunks:
            received += chunk
        return received

    def decode() -> None:
        fmt = codecs.body_format("application/octet-stream", body, spec)
        codecs.decode(fmt, body, spec, max_image_pixels=40_000_000)

    return {
        "model": model,
        "threads": cores,
        "input_bytes": len(body),
        "output_values": int(output.numel()),
        "handle": handle.__dict__,
        "handle_idle": handle_idle.__dict__,
        "body_join": timed_ms(receive, 500).__dict__,
        "decode": timed_ms(decode, 500).__dict__,
        "encode": timed_ms(lambda: JSONBody(output_codecs.to_json(output)), 500).__dict__,
        "pipe_round_trip": pipe_round_trip(x, output, 300).__dict__,
        "thread_hop": thread_hop(500).__dict__,
        **engine_round_trip(model, requests),
    }


def engine_round_trip(model: str, requests: int) -> dict[str, Any]:
    """`Engine.infer([x])` on a fat instance (the pool the server uses, without HTTP), with
    `handle` timed inside the worker: the worker's own handle time and the IPC around it."""
    import math

    from packrat.pool.engine import Engine
    from packrat.types import InstanceSpec, Plan

    cores = tuple(sorted(os.sched_getaffinity(0)))
    plan = Plan(len(cores), 1, math.nan, (InstanceSpec(len(cores), 1, cores),))
    with Engine(TimedZooSource(model), plan) as engine:
        x = engine.example_requests(1)[0]
        round_trips, in_worker = [], []
        for i in range(WARMUP_REQUESTS + requests):
            started = time.perf_counter()
            [(_, handle_ms)] = engine.infer([x])
            if i >= WARMUP_REQUESTS:
                round_trips.append((time.perf_counter() - started) * 1000.0)
                in_worker.append(handle_ms)
    return {
        "engine_infer": Latency.of(round_trips).__dict__,
        "handle_in_worker": Latency.of(in_worker).__dict__,
    }


def timed_after_idle(fn: Any, repeats: int, idle_s: float) -> Latency:
    """Latency of `fn()` when each call follows `idle_s` of sleep, as in a server at low load:
    torch's OpenMP threads have gone to sleep and must be woken by the next call."""
    samples = []
    for _ in range(repeats):
        time.sleep(idle_s)
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000.0)
    return Latency.of(samples)


def pipe_round_trip(request: Any, output: Any, repeats: int) -> Latency:
    """RunBatch with `request` to a spawned echo process over Packrat's Channel (pickle +
    pipe), answered by BatchDone with `output`: the IPC of one batch-1 request."""
    import multiprocessing

    from packrat.pool.channel import Channel
    from packrat.pool.messages import RunBatch

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=True)
    echo = context.Process(target=_echo_worker, args=(theirs, output), daemon=True)
    echo.start()
    theirs.close()
    channel = Channel(ours)
    batch_ids = iter(range(1 << 30))

    def exchange() -> None:
        channel.send(RunBatch(next(batch_ids), (request,)))
        channel.recv_reply()

    try:
        return timed_ms(exchange, repeats, warmup=20)
    finally:
        ours.close()
        echo.join(10)


def _echo_worker(connection: Any, output: Any) -> None:
    from packrat.pool.channel import Channel
    from packrat.pool.messages import BatchDone

    channel = Channel(connection)
    while True:
        try:
            command = channel.recv_command()
        except EOFError:
            return
        channel.send(BatchDone(command.batch_id, (output.clone(),)))


def thread_hop(repeats: int) -> Latency:
    """`await asyncio.to_thread(no-op)` from an event loop: how the runtime reaches the pool."""
    import asyncio

    async def hops() -> Latency:
        samples = []
        for _ in range(repeats + 20):
            started = time.perf_counter()
            await asyncio.to_thread(lambda: None)
            samples.append((time.perf_counter() - started) * 1000.0)
        return Latency.of(samples[20:])

    return asyncio.run(hops())


def in_process(model: str, requests: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--in-process-child", model, "--requests", str(requests)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- the client -------------------------------------------------------------------------------


@dataclass
class ClientRun:
    latency: Latency
    # The model's own time for each request, timed in its worker during this run: TorchServe's
    # handler sends it (X-Handler-Ms), Packrat in its Server-Timing header.
    handler_ms: Latency | None
    response_bytes: int
    overhead_ms: Latency | None = None  # per request: e2e - handler time


CLIENTS = ("http.client", "httpx")
"""The main client (the standard library's, with the least client-side cost per request) and
the popular one, whose extra cost shows in the e2e times."""


def run_client(url: str, body: bytes, requests: int, kind: str = CLIENTS[0]) -> ClientRun:
    """`requests` sequential POSTs of `body` over one keep-alive connection, after a warm-up,
    with the `kind` client."""
    samples: list[float] = []
    handler_ms: list[float] = []
    post = _httpx_post if kind == "httpx" else _stdlib_post
    with post(url) as send:
        for i in range(WARMUP_REQUESTS + requests):
            started = time.perf_counter()
            headers, content = send(body)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            handler = model_ms(headers)
            if i >= WARMUP_REQUESTS:
                samples.append(elapsed_ms)
                if handler is not None:
                    handler_ms.append(handler)
    overhead = [e - h for e, h in zip(samples, handler_ms, strict=True)] if handler_ms else []
    return ClientRun(
        Latency.of(samples),
        Latency.of(handler_ms) if handler_ms else None,
        len(content),
        Latency.of(overhead) if overhead else None,
    )


Send = Callable[[bytes], tuple[httpx.Headers, bytes]]


@contextmanager
def _httpx_post(url: str) -> Iterator[Send]:
    with httpx.Client(timeout=60.0) as client:

        def send(body: bytes) -> tuple[httpx.Headers, bytes]:
            response = client.post(url, content=body, headers=RAW)
            response.raise_for_status()
            return response.headers, response.content

        yield send


@contextmanager
def _stdlib_post(url: str) -> Iterator[Send]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:

        def send(body: bytes) -> tuple[httpx.Headers, bytes]:
            connection.request("POST", parts.path, body=body, headers=RAW)
            response = connection.getresponse()
            content = response.read()
            if response.status != 200:
                raise RuntimeError(f"POST {url}: {response.status} {content[:200]!r}")
            return httpx.Headers(response.getheaders()), content

        yield send
    finally:
        connection.close()


def model_ms(headers: httpx.Headers) -> float | None:
    """The model's time for a request, from its response: TorchServe's handler here sends
    X-Handler-Ms; Packrat sends `Server-Timing: compute;dur=MS`."""
    if "x-handler-ms" in headers:
        return float(headers["x-handler-ms"])
    found = _COMPUTE.search(headers.get("server-timing", ""))
    return float(found.group(1)) if found else None


def ping_latency(url: str, requests: int = 200) -> Latency:
    with httpx.Client(timeout=10.0) as client:
        return timed_ms(lambda: client.get(url).raise_for_status(), requests, warmup=20)


def payload(model_input_bytes: int) -> bytes:
    rng = np.random.default_rng(0)
    return rng.standard_normal(model_input_bytes // 4, dtype=np.float32).tobytes()


# --- Packrat ----------------------------------------------------------------------------------


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


# --- TorchServe ---------------------------------------------------------------------------


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


# --- the report -------------------------------------------------------------------------------


@dataclass
class ModelResult:
    model: str
    requests: int
    inproc: dict[str, Any]
    packrat: ServerRun
    torchserve: ServerRun | None


TARGET_MS = {"tiny-resnet": 1.0, "resnet50": 3.0}


def render(results: list[ModelResult], command: str, versions: dict[str, str]) -> str:
    out = ["# Serving overhead at batch size 1 (issue 3)", ""]
    out += [
        f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on "
        f"{platform.node() or 'this machine'}: {cpu_model()}, "
        f"{len(os.sched_getaffinity(0))} usable cores, Linux {platform.release()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        "",
        f"Command: `{command}`",
        "",
        "One client, sequential requests over one keep-alive connection on loopback: first "
        "the standard library's `http.client` (the server's metrics and the breakdown cover "
        "its requests), then httpx; "
        "raw float32 bodies (`application/octet-stream`), 20 warm-up requests. Packrat: "
        "`packrat serve MODEL --fat --max-batch-size 1` (one worker, all cores). TorchServe: "
        "the same model exported to TorchScript (`packrat export`), one worker, batch size 1, "
        "handler `benchmarks/torchserve/raw_tensor_handler.py` (torch threads = all cores; "
        "answers written by orjson from the numpy row, `RAW_HANDLER_JSON=orjson`, as "
        "Packrat's server writes them, so both spend the same on JSON). "
        "In-process = the model's own time, preprocess + inference + postprocess "
        "(`handler.handle`), timed inside the worker for every request of the same run: "
        "TorchServe's handler sends it in a header (X-Handler-Ms), Packrat in its `Server-Timing: "
        "compute;dur=MS` header. "
        "**Overhead = e2e p50 - in-process p50**; the per-request column is the p50 of "
        "(e2e - in-process) over the same requests.",
        "",
    ]
    for result in results:
        out += _model_table(result)
    for result in sorted(results, key=lambda r: -r.inproc["input_bytes"]):
        out += _breakdown(result)
    out += ["## Notes from the runs", ""]
    for result in results:
        for name, run in (("Packrat", result.packrat), ("TorchServe", result.torchserve)):
            if run is not None:
                out += [f"- {result.model}, {name}: " + note for note in run.notes]
    return "\n".join(out) + "\n"


def _model_table(result: ModelResult) -> list[str]:
    target = TARGET_MS.get(result.model)
    lines = [
        f"## {result.model}: {result.inproc['input_bytes'] / 1000:.1f} KB in, "
        f"{result.inproc['output_values']} values out, {result.requests} requests",
        "",
        "| server | in-process p50 | e2e p50 | e2e p90 | e2e p99 | overhead (p50) "
        "| per-request overhead p50 / p90 | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    target_text = f"<= {target:.0f} ms"
    for name, run in (("Packrat", result.packrat), ("TorchServe 0.12", result.torchserve)):
        if run is None:
            continue
        for kind, client in {CLIENTS[0]: run.client, **run.other_clients}.items():
            if client.handler_ms is None or client.overhead_ms is None:
                continue
            e2e, model_ms, paired = client.latency, client.handler_ms, client.overhead_ms
            overhead = e2e.p50_ms - model_ms.p50_ms
            goal = "-"
            if target is not None and run is result.packrat:
                goal = f"{target_text} {'met' if overhead <= target else '**missed**'}"
            lines.append(
                f"| {name}, {kind} client | {model_ms.p50_ms:.2f} | {e2e.p50_ms:.2f} | "
                f"{e2e.p90_ms:.2f} | {e2e.p99_ms:.2f} | **{overhead:.2f}** | "
                f"{paired.p50_ms:.2f} / {paired.p90_ms:.2f} | {goal} |"
            )
    inproc = Latency(**result.inproc["handle"])
    idle = Latency(**result.inproc["handle_idle"])
    worker = Latency(**result.inproc["handle_in_worker"])
    engine = Latency(**result.inproc["engine_infer"])
    e2e = result.packrat.client.latency
    lines += [
        "",
        f"Packrat's `handle` measured apart, a minute earlier (p50): in a child process back "
        f"to back {inproc.p50_ms:.2f}, after {IDLE_GAP_S * 1000:.0f} ms idle "
        f"{idle.p50_ms:.2f}, inside an Engine worker {worker.p50_ms:.2f} (`Engine.infer` "
        f"round trip, no HTTP: {engine.p50_ms:.2f}); the server's e2e p50 minus the back to "
        f"back figure: {e2e.p50_ms - inproc.p50_ms:.2f}.",
    ]
    pings = f"Packrat {result.packrat.ping.p50_ms:.2f}"
    if result.torchserve is not None:
        pings += f", TorchServe {result.torchserve.ping.p50_ms:.2f}"
    lines += ["", f"All times in ms. GET /ping p50: {pings}.", ""]
    return lines


def _breakdown(result: ModelResult) -> list[str]:
    """Where the time of one request goes (means, ms). Each span is a difference within the
    server run (the client against the server's metrics), or a step timed alone in-process."""
    inproc = result.inproc
    step = {name: Latency(**inproc[name]).mean_ms for name in
            ("handle", "handle_idle", "body_join", "decode", "encode", "pipe_round_trip",
             "thread_hop", "engine_infer", "handle_in_worker")}  # fmt: skip
    packrat = result.packrat
    e2e = packrat.client.latency.mean_ms
    server = packrat.server
    request_ms, batch_ms, compute_ms = (
        server["request_ms"],
        server["batch_ms"],
        server["compute_ms"],
    )
    in_route = request_ms - batch_ms
    timed_steps = step["body_join"] + step["decode"] + step["encode"]
    lines = [
        f"## Where the time goes: {result.model}, {inproc['input_bytes'] / 1000:.0f} KB request "
        f"(means, ms)",
        "",
        "| span | Packrat | how it is known |",
        "| --- | ---: | --- |",
        f"| HTTP outside the route: client send + receive, uvicorn parse, response write "
        f"| {e2e - request_ms:.2f} | e2e ({e2e:.2f}) - server request time "
        f"({request_ms:.2f}, `packrat_request_latency_seconds`) |",
        f"| route, outside the batch: read body, decode, batcher, encode | {in_route:.2f} "
        f"| request time - batch time ({batch_ms:.2f}, `packrat_batch_latency_seconds`) |",
        f"| - of which joining the body's chunks (`read_body`, 64 KB chunks) "
        f"| {step['body_join']:.3f} | timed in-process |",
        f"| - of which `codecs.decode` (raw, zero-copy) | {step['decode']:.3f} "
        "| timed in-process |",
        f"| - of which JSON encode of {inproc['output_values']} values (`to_json` + render) "
        f"| {step['encode']:.3f} | timed in-process |",
        f"| - rest: event loop, batcher task wake-up | {in_route - timed_steps:.2f} | difference |",
        f"| IPC to the worker and back (pickle, pipe, unpickle, wake-ups) "
        f"| {batch_ms - compute_ms:.2f} | batch time - the worker's own time "
        f"(`packrat_instance_busy_seconds`); an echo process over the same `Channel`: "
        f"{step['pipe_round_trip']:.2f} |",
        f"| executor-thread hop (`asyncio.to_thread` around `run_split`) | "
        f"{step['thread_hop']:.3f} | timed in-process (inside the batch time) |",
        f"| **overhead (sum of the spans above)** | **{e2e - compute_ms:.2f}** "
        "| e2e - the worker's own time |",
        f"| inference: `handle` (preprocess + model + postprocess) in the worker "
        f"| {compute_ms:.2f} | timed inside the worker (server run); measured apart: in an Engine "
        f"worker {step['handle_in_worker']:.2f}, in-process back to back {step['handle']:.2f}, "
        f"after {IDLE_GAP_S * 1000:.0f} ms idle {step['handle_idle']:.2f} |",
        "",
    ]
    ts = result.torchserve
    if ts is not None and ts.client.handler_ms is not None and ts.server:
        ts_e2e = ts.client.latency.mean_ms
        handler = ts.client.handler_ms.mean_ms
        lines += [
            "TorchServe, same request (means, ms, all from one run): "
            f"e2e {ts_e2e:.2f}; frontend inference time (`ts_inference_latency_microseconds`, "
            f"Netty request in to response out) {ts.server['inference_ms']:.2f}, of which queue "
            f"{ts.server['queue_ms']:.3f}; handler (incl. orjson) {handler:.2f}. So HTTP "
            f"outside the frontend's timer {ts_e2e - ts.server['inference_ms']:.2f}, frontend + "
            f"IPC to the Python worker + its message (de)serialization "
            f"{ts.server['inference_ms'] - handler:.2f}; overhead {ts_e2e - handler:.2f}.",
            "",
        ]
    return lines


def versions(venv: Path | None) -> dict[str, str]:
    found = package_versions()
    if venv is not None:
        found.update(torchserve_versions(venv))
    return found


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-resnet", "resnet50"])
    parser.add_argument("--requests-tiny", type=int, default=200, help="for tiny-* models")
    parser.add_argument("--requests-large", type=int, default=80, help="for the others")
    parser.add_argument("--ts-venv", type=Path, default=Path("/tmp/ts-venv"))
    parser.add_argument("--no-torchserve", action="store_true")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "serve-overhead.md")
    parser.add_argument("--workdir", type=Path, help="keep logs and files here (default: temp)")
    parser.add_argument("--in-process-child", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_child:
        print(json.dumps(in_process_child(args.in_process_child, args.requests)))
        return

    venv = None if args.no_torchserve else args.ts_venv
    if venv is not None:
        ensure_ts_venv(venv, extra=("orjson",))
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-overhead-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for model in args.models:
            requests = args.requests_tiny if model.startswith("tiny") else args.requests_large
            print(f"{model}: in-process ...", flush=True)
            inproc = in_process(model, requests)
            body = payload(inproc["input_bytes"])
            print(f"{model}: packrat serve ...", flush=True)
            packrat = run_packrat(model, body, requests, workdir)
            ts = None
            if venv is not None:
                print(f"{model}: torchserve ...", flush=True)
                ts = run_torchserve(model, body, requests, workdir, venv)
            results.append(ModelResult(model, requests, inproc, packrat, ts))
    command = "python benchmarks/serve_overhead.py " + " ".join(sys.argv[1:])
    report = render(results, command.strip(), versions(venv))
    print(report)
    args.output.write_text(report + kept_analysis(args.output))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
