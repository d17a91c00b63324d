"""The time around a batch-1 request: `packrat serve` of a base commit against the working tree.

    python benchmarks/serve_ab.py --base REF [--model resnet50] [--rounds 10] [--requests 60]
        [--workdir DIR]

(with the project's venv active, from the repository root).

Both servers run side by side, from the same cache (WORKDIR/cache), so they serve the same
profile and plan: A is `packrat serve MODEL` from a worktree of REF (its `src` first on
PYTHONPATH), B the same command from this checkout. One client sends sequential raw requests
(the model's input as raw bytes, `Accept: application/octet-stream`) over one keep-alive
connection per server (the standard library's http.client), each after the previous answer.
Every answer's `Server-Timing: compute` is the worker's `handle`, so e2e - compute is the
serving path around the model: HTTP, the route, the batcher, the pipe and the wake-ups.

Rounds are the replicates (the machine drifts 10-30% within minutes): each round times
`--requests` calls of each server after 5 untimed, in an order that alternates. Per round: the
p50 of e2e and of e2e - compute for each; B / A paired in the round. Over rounds: median and
95% CI of the geometric mean (`harness.stats.Estimate`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

from harness.client import describe, raw_request
from harness.serve import packrat_serve
from harness.stats import Estimate

REPO = Path(__file__).resolve().parents[1]
WARMUP_CALLS = 20
ROUND_WARMUP_CALLS = 5
_COMPUTE = re.compile(r"\bcompute;dur=([0-9.]+)")


class Client:
    """Sequential raw POSTs to one server's prediction route."""

    def __init__(self, url: str, model: str, body: bytes) -> None:
        parts = urllib.parse.urlsplit(url)
        self._connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        self._path = f"/predictions/{model}"
        self._body = body
        self._headers = {
            "Content-Type": "application/octet-stream",
            "Accept": "application/octet-stream",
        }

    def post(self) -> tuple[float, float]:
        """One request: (e2e ms, e2e - the worker's compute ms)."""
        started = time.perf_counter()
        self._connection.request("POST", self._path, body=self._body, headers=self._headers)
        response = self._connection.getresponse()
        content = response.read()
        e2e_ms = (time.perf_counter() - started) * 1000.0
        if response.status != 200:
            raise RuntimeError(f"POST {self._path}: {response.status} {content[:200]!r}")
        timing = _COMPUTE.search(response.getheader("Server-Timing") or "")
        if timing is None:
            raise RuntimeError("no Server-Timing: compute in the answer")
        return e2e_ms, e2e_ms - float(timing.group(1))


@contextlib.contextmanager
def worktree(ref: str, where: Path):  # type: ignore[no-untyped-def]
    """A detached worktree of `ref` at `where`, removed afterwards."""
    subprocess.run(["git", "worktree", "add", "--detach", str(where), ref], cwd=REPO, check=True)
    try:
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=REPO, check=False)


@contextlib.contextmanager
def pythonpath(path: Path | None):  # type: ignore[no-untyped-def]
    """PYTHONPATH set to `path` (None: unset) for the servers started inside."""
    saved = os.environ.get("PYTHONPATH")
    if path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit A runs (e.g. HEAD~3)")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="serve-ab-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(worktree(args.base, workdir / "base"))
        clients: dict[str, Client] = {}
        for name, src in (("A", base / "src"), ("B", None)):
            with pythonpath(src):
                log = workdir / f"serve-{name}.log"
                server = stack.enter_context(packrat_serve(args.model, [], workdir, log))
            body = raw_request(describe(server.urls, args.model)["input_spec"]).tobytes()
            clients[name] = Client(server.urls["inference"], args.model, body)
            for _ in range(WARMUP_CALLS):
                clients[name].post()
            plan = describe(server.urls, args.model)["plan"]["describe"]
            print(f"{name}: serving batch 1 on {plan}", flush=True)
        e2e: dict[str, list[float]] = {name: [] for name in clients}
        around: dict[str, list[float]] = {name: [] for name in clients}
        for r in range(args.rounds):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                for _ in range(ROUND_WARMUP_CALLS):
                    clients[name].post()
                calls = [clients[name].post() for _ in range(args.requests)]
                e2e[name].append(statistics.median(c[0] for c in calls))
                around[name].append(statistics.median(c[1] for c in calls))
            print(
                f"round {r + 1}/{args.rounds}: "
                + " | ".join(f"{n} e2e {e2e[n][-1]:.2f} around {around[n][-1]:.3f}" for n in "AB"),
                flush=True,
            )
    for label, values in (("e2e", e2e), ("around the worker", around)):
        ratio = Estimate.of([b / a for a, b in zip(values["A"], values["B"], strict=True)])
        print(
            f"{label} p50 (ms, median over rounds): A {statistics.median(values['A']):.3f}, "
            f"B {statistics.median(values['B']):.3f}; B / A {ratio.median:.3f} "
            f"[{ratio.low:.3f}, {ratio.high:.3f}]"
        )


if __name__ == "__main__":
    main()
