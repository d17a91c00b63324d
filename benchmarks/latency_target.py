"""Batch-1 latency of `packrat serve MODEL` (its defaults) against OpenVINO's own, in-process.

    python benchmarks/latency_target.py [--models resnet50 bert-base gpt2] [--rounds 5]
        [--requests 100] [--output docs/benchmarks/latency-target.md] [--workdir DIR]

(with the project's venv active, from the repository root).

Issue 15's target: end to end, one client, batch 1, Packrat's p50 is within 1.10x + 1 ms of
OpenVINO's in-process latency with its `LATENCY` hint on the same cores.

For each model:

- Packrat: `packrat serve MODEL` with nothing but free ports (its cache in WORKDIR/cache, so
  the conversions and profiles of the first start are reused by the reference and by later
  runs); one client sends sequential raw requests over one keep-alive connection (the standard
  library's http.client, the client with the least cost of its own), each after the previous
  answer, asking for the answer as raw tensor bytes (`Accept: application/octet-stream`, the
  form closest to the array OpenVINO hands its caller) and, in a run of its own, as JSON.
  Every response's `Server-Timing: compute` (the worker's `handle`) is kept too, so the e2e
  time splits into the worker's share and the rest.
- OpenVINO: a child process reads the OpenVINO IR that Packrat converted the model to (fp32
  weights) and compiles it with `PERFORMANCE_HINT: LATENCY` and OpenVINO's defaults otherwise
  (on a CPU with native bf16 it picks bf16 itself, as Packrat's default does), then times
  back-to-back `infer` calls on the same request, batch 1, on every core of this process.

Both stay up for the whole run, one idle while the other is measured. Rounds are the
replicates (the machine drifts 10-30% within minutes): each round times `--requests` calls of
each, after 20 untimed, in an order that rotates. Per round: the p50 of each; the target
ratio e2e p50 / (1.10 x OpenVINO p50 + 1 ms), paired in the round. Over rounds: median and
95% CI of the geometric mean (`harness.stats.Estimate`).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from harness.client import describe, metric, raw_request, scrape
from harness.report import cpu_model, kept_analysis, package_versions
from harness.serve import packrat_serve
from harness.stats import Estimate

REPO = Path(__file__).resolve().parents[1]
METHOD = (__doc__ or "")[(__doc__ or "").index("For each model:") :].strip()
WARMUP_CALLS = 20
TARGET_RATIO = 1.10
TARGET_SLACK_MS = 1.0
_COMPUTE = re.compile(r"\bcompute;dur=([0-9.]+)")  # Server-Timing: the worker's `handle`


def target_ms(openvino_ms: float) -> float:
    """The slowest e2e p50 the target admits against OpenVINO's in-process p50."""
    return TARGET_RATIO * openvino_ms + TARGET_SLACK_MS


# --- OpenVINO in-process, in a child ----------------------------------------------------------


class OpenVinoReference:
    """A child process timing OpenVINO `infer` calls (LATENCY hint) on request."""

    def __init__(self, xml: Path, request: np.ndarray) -> None:
        handle, name = tempfile.mkstemp(suffix=".npy")
        os.close(handle)
        np.save(name, request)
        self._request_path = name
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--reference-child", str(xml), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._stdin: IO[str] = self._process.stdin  # type: ignore[assignment]
        self._stdout: IO[str] = self._process.stdout  # type: ignore[assignment]
        ready = json.loads(self._stdout.readline())
        self.properties: dict[str, str] = ready["properties"]

    def time_calls(self, calls: int) -> list[float]:
        self._stdin.write(f"{calls}\n")
        self._stdin.flush()
        return [float(v) for v in json.loads(self._stdout.readline())]

    def close(self) -> None:
        if self._process.poll() is None:
            self._stdin.close()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        os.unlink(self._request_path)


def reference_child(xml: str, request_file: str) -> None:
    """The child's side: compile, say which properties OpenVINO chose, then answer each line
    "CALLS" on stdin with the JSON list of that many `infer` times in ms."""
    import openvino as ov

    request = np.load(request_file)
    compiled = ov.Core().compile_model(xml, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    names = ("INFERENCE_PRECISION_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")
    properties = {name: str(compiled.get_property(name)) for name in names}
    infer = compiled.create_infer_request()
    print(json.dumps({"properties": properties}), flush=True)
    for line in sys.stdin:
        samples = []
        for i in range(WARMUP_CALLS + int(line)):
            started = time.perf_counter()
            infer.infer({0: request})
            if i >= WARMUP_CALLS:
                samples.append((time.perf_counter() - started) * 1000.0)
        print(json.dumps(samples), flush=True)


# --- one model --------------------------------------------------------------------------------


ANSWERS = {"raw": "application/octet-stream", "json": "application/json"}
"""Packrat's two answer forms, by the Accept header the client sends."""


@dataclass
class Served:
    """One answer form's per-round p50s: end to end, and of the worker's `handle`."""

    e2e_ms: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)
    means_ms: list[dict[str, float]] = field(default_factory=list)  # per round, see SPANS


@dataclass
class ModelResult:
    model: str
    backend: str
    plan: str
    openvino_properties: dict[str, str]
    openvino_ms: list[float] = field(default_factory=list)  # per round: p50
    served: dict[str, Served] = field(default_factory=lambda: {k: Served() for k in ANSWERS})

    def ratios(self, answer: str) -> list[float]:
        """Per round: e2e p50 / target_ms(OpenVINO p50)."""
        e2e = self.served[answer].e2e_ms
        return [e / target_ms(o) for e, o in zip(e2e, self.openvino_ms, strict=True)]


def converted_ir(cache: Path, model: str) -> Path:
    """The OpenVINO IR Packrat converted `model` to, from the cache of its server."""
    found = sorted((cache / "converted").glob(f"{model}-openvino-*/model.xml"))
    if not found:
        raise SystemExit(f"no OpenVINO conversion of {model} under {cache}: did serve convert it?")
    return found[0]


def sequential_posts(
    url: str, body: bytes, accept: str, requests: int, metrics_url: str, model: str
) -> Served:
    """`requests` POSTs one after another on one keep-alive connection (http.client), after
    WARMUP_CALLS untimed: their p50 e2e and Server-Timing compute times, and the means of
    each span, the server's request and batch times from its /metrics around the timed ones."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    headers = {"Content-Type": "application/octet-stream", "Accept": accept}
    e2e: list[float] = []
    compute: list[float] = []
    try:
        for i in range(WARMUP_CALLS + requests):
            if i == WARMUP_CALLS:
                before = scrape(metrics_url)
            started = time.perf_counter()
            connection.request("POST", parts.path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            if response.status != 200:
                raise RuntimeError(f"POST {url}: {response.status} {content[:200]!r}")
            if i >= WARMUP_CALLS:
                e2e.append(elapsed_ms)
                timing = _COMPUTE.search(response.getheader("Server-Timing") or "")
                assert timing is not None, "no Server-Timing from packrat"
                compute.append(float(timing.group(1)))
    finally:
        connection.close()
    after = scrape(metrics_url)
    label = f'model="{model}"'

    def mean_ms(name: str) -> float:
        total = metric(after, f"{name}_sum", label) - metric(before, f"{name}_sum", label)
        count = metric(after, f"{name}_count", label) - metric(before, f"{name}_count", label)
        return 1000.0 * total / count

    means = {
        "e2e": statistics.fmean(e2e),
        "request": mean_ms("packrat_request_latency_seconds"),
        "batch": mean_ms("packrat_batch_latency_seconds"),
        "compute": statistics.fmean(compute),
    }
    return Served([statistics.median(e2e)], [statistics.median(compute)], [means])


def measure_model(model: str, rounds: int, requests: int, workdir: Path) -> ModelResult:
    log = workdir / f"serve-{model}.log"
    started = time.monotonic()
    with packrat_serve(model, [], workdir, log) as server:
        print(f"{model}: serving after {time.monotonic() - started:.0f} s", flush=True)
        described = describe(server.urls, model)
        spec = described["input_spec"]
        request = raw_request(spec)
        body = request.tobytes()
        reference = OpenVinoReference(converted_ir(workdir / "cache", model), request[None])
        url = f"{server.urls['inference']}/predictions/{model}"
        result = ModelResult(
            model, _backend_line(described), described["plan"]["describe"], reference.properties
        )
        systems = ["openvino", *ANSWERS]
        try:
            for r in range(rounds):
                for system in systems[r % len(systems) :] + systems[: r % len(systems)]:
                    if system == "openvino":
                        ms = statistics.median(reference.time_calls(requests))
                        result.openvino_ms.append(ms)
                        continue
                    one = sequential_posts(
                        url, body, ANSWERS[system], requests, server.urls["metrics"] + "/metrics",
                        model,
                    )  # fmt: skip
                    result.served[system].e2e_ms += one.e2e_ms
                    result.served[system].compute_ms += one.compute_ms
                    result.served[system].means_ms += one.means_ms
                line = ", ".join(
                    f"packrat {k} {v.e2e_ms[-1]:.2f} (worker {v.compute_ms[-1]:.2f})"
                    for k, v in result.served.items()
                )
                print(
                    f"{model} round {r + 1}/{rounds}: OpenVINO {result.openvino_ms[-1]:.2f} ms, "
                    f"{line}, target {target_ms(result.openvino_ms[-1]):.2f} ms",
                    flush=True,
                )
        finally:
            reference.close()
        result.plan = describe(server.urls, model)["plan"]["describe"]
    return result


def _backend_line(described: dict[str, Any]) -> str:
    backend = described.get("backend") or {}
    return f"{backend.get('backend', '?')} {backend.get('precision', '?')}"


# --- report -----------------------------------------------------------------------------------


def cell(estimate: Estimate, digits: int = 2) -> str:
    return f"{estimate.median:.{digits}f} [{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


def render(results: list[ModelResult], command: str, rounds: int, requests: int) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Batch-1 latency: `packrat serve` against OpenVINO in-process (issue 15)",
        "",
        f"Measured {now} on {platform.node()}: {cpu_model()}, {len(os.sched_getaffinity(0))} "
        f"usable cores, Linux {platform.release()}; Python {platform.python_version()}, "
        f"{versions}.",
        "",
        f"Command: `{command}` ({rounds} rounds of {requests} timed calls per system, after "
        f"{WARMUP_CALLS} untimed).",
        "",
        METHOD,
        "",
        f"Target: e2e p50 <= {TARGET_RATIO:.2f} x OpenVINO p50 + {TARGET_SLACK_MS:g} ms; "
        "e2e / target is e2e p50 over that bound, paired by round (<= 1 meets it). Answers: "
        "`raw` with `Accept: application/octet-stream` (the output tensor's bytes, as OpenVINO "
        "hands its caller an array), `json` with `Accept: application/json`.",
        "",
        "| model | Packrat backend, plan | OpenVINO (LATENCY hint) p50 | answer | Packrat e2e p50 "
        "| of which worker `handle` | rest (HTTP, batcher, IPC) | e2e / target | met? |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        for answer, served in result.served.items():
            ratio = Estimate.of(result.ratios(answer))
            rest = [e - c for e, c in zip(served.e2e_ms, served.compute_ms, strict=True)]
            lines.append(
                f"| {result.model} | {result.backend}, {result.plan} | "
                f"{cell(Estimate.of(result.openvino_ms))} | {answer} | "
                f"{cell(Estimate.of(served.e2e_ms))} | {cell(Estimate.of(served.compute_ms))} | "
                f"{statistics.median(rest):.2f} | {cell(ratio, 3)} | "
                f"{'yes' if ratio.median <= 1.0 else '**no**'} |"
            )
    lines += [
        "",
        "Where the time goes, means over the timed requests, median over rounds (ms): HTTP "
        "outside the route = client e2e - the server's request time "
        "(`packrat_request_latency_seconds`); the route outside the batch = request - batch "
        "time (`packrat_batch_latency_seconds`: reading the body, decoding, the batcher, "
        "encoding the answer); the batch outside the worker = batch - the worker's `handle` "
        "(the thread hop, the shared-memory transport and the pipe both ways, the wake-ups).",
        "",
        "| model | answer | e2e | HTTP outside the route | route outside the batch | "
        "batch outside the worker | worker `handle` |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for answer, served in result.served.items():
            spans = [_spans(means) for means in served.means_ms]
            row = [statistics.median(column) for column in zip(*spans, strict=True)]
            lines.append(
                f"| {result.model} | {answer} | " + " | ".join(f"{v:.2f}" for v in row) + " |"
            )
    lines += ["", "All times in ms: median over rounds [95% CI]. OpenVINO chose:", ""]
    for result in results:
        chosen = ", ".join(f"{k} {v}" for k, v in result.openvino_properties.items())
        lines.append(f"- {result.model}: {chosen}")
    lines += ["", "Per round, OpenVINO p50 / raw e2e p50 / json e2e p50 (ms):", ""]
    for result in results:
        rows = zip(
            result.openvino_ms,
            result.served["raw"].e2e_ms,
            result.served["json"].e2e_ms,
            strict=True,
        )
        lines.append(
            f"- {result.model}: " + "; ".join(f"{o:.2f} / {r:.2f} / {j:.2f}" for o, r, j in rows)
        )
    return "\n".join(lines) + "\n"


def _spans(means: dict[str, float]) -> tuple[float, float, float, float, float]:
    """e2e, then its parts: HTTP outside the route, the route outside the batch, the batch
    outside the worker, the worker's `handle`."""
    return (
        means["e2e"],
        means["e2e"] - means["request"],
        means["request"] - means["batch"],
        means["batch"] - means["compute"],
        means["compute"],
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--reference-child":
        reference_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "bert-base", "gpt2"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--output", type=Path, default=REPO / "docs/benchmarks/latency-target.md")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="latency-target-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = [measure_model(m, args.rounds, args.requests, workdir) for m in args.models]
    command = "python benchmarks/latency_target.py " + " ".join(sys.argv[1:])
    text = render(results, command.strip(), args.rounds, args.requests)
    print(text)
    args.output.write_text(text + kept_analysis(args.output))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
