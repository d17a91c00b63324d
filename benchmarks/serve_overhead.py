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
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.report import kept_analysis
from harness.serve_overhead.client import payload
from harness.serve_overhead.in_process import in_process_child
from harness.serve_overhead.report import ModelResult, render, versions
from harness.serve_overhead.servers import run_packrat, run_torchserve
from harness.torchserve import ensure_ts_venv

REPO = Path(__file__).resolve().parents[1]


def in_process(model: str, requests: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--in-process-child", model, "--requests", str(requests)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


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
