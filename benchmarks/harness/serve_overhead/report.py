"""The report of benchmarks/serve_overhead.py (Markdown): per model the latency table and the
breakdown of where the time goes."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report import cpu_model, package_versions
from harness.serve_overhead.client import CLIENTS
from harness.serve_overhead.servers import ServerRun
from harness.serve_overhead.timing import IDLE_GAP_S, Latency
from harness.torchserve import versions as torchserve_versions


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
             "engine_infer", "engine_on_loop", "engine_in_thread",
             "handle_in_worker")}  # fmt: skip
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
        f"| - of which the event loop's wait for the batch (`run_split_on_loop`) "
        f"| {step['engine_on_loop'] - step['engine_infer']:.3f} | timed in-process: the batch "
        f"awaited on a loop ({step['engine_on_loop']:.2f}) - called directly "
        f"({step['engine_infer']:.2f}); through `asyncio.to_thread`, as before: "
        f"{step['engine_in_thread'] - step['engine_infer']:.3f} |",
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
