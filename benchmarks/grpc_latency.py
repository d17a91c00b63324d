"""Latency of one KServe v2 infer call over gRPC and over HTTP, one client, sequential.

    python benchmarks/grpc_latency.py [--models tiny-resnet resnet50] [--requests 200]
        [--rounds 4] [--workdir DIR]

(with the project's venv and its test extra active, for tritonclient; HF_HUB_OFFLINE=1 is set
for the server, whose cache goes to the work directory).

For each model, `packrat serve MODEL --fat --max-batch-size 1 --backend torch` on free ports;
one client sends the same float32 request of batch 1 with Triton's own clients, as Triton
users do: `tritonclient.grpc` (raw_input_contents) and `tritonclient.http` (binary tensor
data), each on one connection kept open. The requests alternate between the two in
`--rounds` rounds, each side first in turn, so the machine's drift falls on both; 10 of each
warm up first. Prints p50 and p90 per protocol (ms) and gRPC's p50 minus HTTP's, as a
Markdown table. Takes about a minute on 2 cores with tiny-resnet (most of it starting the
server), a few more with resnet50; every server started is stopped.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.client import describe
from harness.serve import packrat_serve

_GRPC_ADDRESS = re.compile(r"^grpc API listening on (\S+)$", re.M)
WARM_UP = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-resnet"])
    parser.add_argument("--requests", type=int, default=200, help="per protocol and model")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grpc-latency-"))
    rows = [measure(model, args.requests, args.rounds, workdir) for model in args.models]
    today = datetime.date.today().isoformat()
    print(f"\n{args.requests} requests per protocol, batch 1, one client, {today}\n")
    print("| model | gRPC p50 | gRPC p90 | HTTP p50 | HTTP p90 | gRPC - HTTP (p50) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for model, grpc_ms, http_ms in rows:
        g50, g90, h50, h90 = (_pct(t, q) for t in (grpc_ms, http_ms) for q in (50, 90))
        cells = [f"{v:.2f} ms" for v in (g50, g90, h50, h90)] + [f"{g50 - h50:+.2f} ms"]
        print(f"| {model} | {' | '.join(cells)} |")


def measure(
    model: str, requests: int, rounds: int, workdir: Path
) -> tuple[str, list[float], list[float]]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    options = ["--fat", "--max-batch-size", "1", "--backend", "torch"]
    with packrat_serve(model, options, workdir, workdir / f"serve-{model}.log") as server:
        grpc_address = _GRPC_ADDRESS.findall((workdir / f"serve-{model}.log").read_text())[0]
        spec = describe(server.urls, model)["input_spec"]
        x = np.random.default_rng(0).standard_normal([1, *spec["shape"]]).astype(np.float32)
        grpc = grpcclient.InferenceServerClient(grpc_address)
        http = httpclient.InferenceServerClient(server.urls["inference"].removeprefix("http://"))
        grpc_input = grpcclient.InferInput("x", list(x.shape), "FP32")
        grpc_input.set_data_from_numpy(x)
        http_input = httpclient.InferInput("x", list(x.shape), "FP32")
        http_input.set_data_from_numpy(x, binary_data=True)
        http_output = [httpclient.InferRequestedOutput("output0", binary_data=True)]
        calls: dict[str, Callable[[], Any]] = {
            "grpc": lambda: grpc.infer(model, [grpc_input]).as_numpy("output0"),
            "http": lambda: http.infer(model, [http_input], outputs=http_output).as_numpy(
                "output0"
            ),
        }
        first = {name: call() for name, call in calls.items()}
        np.testing.assert_allclose(first["grpc"], first["http"], rtol=1e-5, atol=1e-6)
        for call in calls.values():
            for _ in range(WARM_UP):
                call()
        times: dict[str, list[float]] = {"grpc": [], "http": []}
        per_round = max(1, requests // rounds)
        for round_ in range(rounds):
            order = ["grpc", "http"] if round_ % 2 == 0 else ["http", "grpc"]
            for name in order:
                for _ in range(per_round):
                    start = time.perf_counter()
                    calls[name]()
                    times[name].append((time.perf_counter() - start) * 1000)
        grpc.close()
        http.close()
    return model, times["grpc"], times["http"]


def _pct(values: list[float], q: int) -> float:
    if q == 50:
        return statistics.median(values)
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


if __name__ == "__main__":
    main()
