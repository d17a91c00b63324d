"""Request and output transport to a worker: through the pipe (before) or shared memory (after).

    python benchmarks/ipc_transport.py [--base REV] [--rounds 10] [--calls 150]

(with the project's venv active, from the repository root). Prints a Markdown table.

What it times: `Engine.infer` round trips, one at a time, for ResNet-50's traffic (float32
[3, 224, 224] requests, 602 KB each; one 1000-float answer per request) at batch 1 and 8,
against `ipc_transport_handler.py`, which has no model (it stacks the requests and returns
fixed logits), so the round trip is transport. One instance, one thread, on the last CPU
this process may use; weights are not shared (there are none).

Three variants, each an engine in its own process, all started before the first round:

- before: the code at `--base` (default: where this branch left main, `git merge-base HEAD
  main`), extracted with `git archive` into a temporary directory;
- after: this checkout, tensors through shared-memory arenas (the default);
- after, pipe: this checkout with `EngineConfig(shared_tensors=False)`, the fallback path.

Rounds are the replicates (the machine's speed drifts by 10-30% within minutes): in each
round every variant runs `--calls` timed calls at batch 1, then at batch 8 (after 10 untimed
ones), the variants' order rotating from round to round. Per round and variant the median
call is taken; over rounds, the table gives the median of those and the 95% CI of their
geometric mean (Student's t on the logarithms), and after / before paired by round.

A second table times the encoding alone, in this process, with no pipe and no other process:
a `RunBatch` of the requests encoded and decoded, then a `BatchDone` of the answers, as the
pipe path (`tensor_pickle.dumps` / `pickle.loads`) and as the arena path (decoded as views
for the worker, as copies for the engine): what is left of a round trip is the pipe's own
copies and the processes' wake-ups. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO, Any

from harness.stats import Estimate

REPO = Path(__file__).resolve().parents[1]
HANDLER = Path(__file__).resolve().parent / "ipc_transport_handler.py"
BATCHES = (1, 8)
WARMUP_CALLS = 10
REQUEST_SHAPE = (3, 224, 224)
ANSWER_VALUES = 1000


@dataclass(frozen=True)
class Variant:
    label: str
    src: Path
    config: dict[str, Any]


class Child:
    """One variant's engine, in its own process, timing `infer` on request."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        env = dict(os.environ, PYTHONPATH=str(variant.src), HF_HUB_OFFLINE="1")
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(variant.config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._stdin: IO[str] = self._process.stdin  # type: ignore[assignment]
        self._stdout: IO[str] = self._process.stdout  # type: ignore[assignment]

    def wait_ready(self) -> None:
        line = self._stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{self.variant.label}: engine did not start ({line!r})")

    def time_calls(self, batch: int, calls: int) -> list[float]:
        self._stdin.write(f"{batch} {calls}\n")
        self._stdin.flush()
        return [float(v) for v in json.loads(self._stdout.readline())]

    def stop(self) -> None:
        if self._process.poll() is None:
            self._stdin.close()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def run_child(config: dict[str, Any]) -> None:
    """The child's side: an engine of one single-threaded instance; answer each line "BATCH
    CALLS" on stdin with the JSON list of that many `infer` round trips in ms."""
    import torch

    from packrat.models.handler_file import HandlerFileSource
    from packrat.pool import Engine, EngineConfig
    from packrat.types import InstanceSpec, Plan

    cpu = sorted(os.sched_getaffinity(0))[-1]
    plans = {
        b: Plan(cores=1, batch=b, latency_ms=0.0, instances=(InstanceSpec(1, b, (cpu,)),))
        for b in BATCHES
    }
    generator = torch.Generator().manual_seed(1)
    requests = [torch.randn(REQUEST_SHAPE, generator=generator) for _ in range(max(BATCHES))]
    engine_config = EngineConfig(share_weights=False, **config)
    with Engine(HandlerFileSource(HANDLER), plans[BATCHES[0]], engine_config) as engine:
        print("ready", flush=True)
        for line in sys.stdin:
            batch, calls = (int(v) for v in line.split())
            engine.replan(plans[batch])
            batch_requests = requests[:batch]
            for _ in range(WARMUP_CALLS):
                engine.infer(batch_requests)
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                outputs = engine.infer(batch_requests)
                samples.append((time.perf_counter() - started) * 1000.0)
            assert len(outputs) == batch and outputs[0].shape == (ANSWER_VALUES,)
            print(json.dumps(samples), flush=True)


def cell(estimate: Estimate, digits: int = 2) -> str:
    """A median and its 95% CI for a table: "0.40 [0.36, 0.43]"."""
    return f"{estimate.median:.{digits}f} [{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


def codec_table(calls: int) -> str:
    """Encode + decode of one batch's messages in this process: pipe path against arenas."""
    import torch

    from packrat.pool.arena import Arena
    from packrat.pool.messages import BatchDone, RunBatch

    generator = torch.Generator().manual_seed(1)
    writer = Arena.create("bench")
    reader = Arena(os.dup(writer.fileno()))
    lines = [
        "| batch | pipe: encode + decode (ms) | arenas (ms) |",
        "| ---: | ---: | ---: |",
    ]
    for batch in BATCHES:
        requests = tuple(torch.randn(REQUEST_SHAPE, generator=generator) for _ in range(batch))
        answers = tuple(torch.randn(ANSWER_VALUES, generator=generator) for _ in range(batch))
        messages = (RunBatch(0, requests), BatchDone(0, answers))
        pipe = median_ms(functools.partial(codec_pipe, *messages), calls)
        arenas = median_ms(functools.partial(codec_arenas, *messages, writer, reader), calls)
        lines.append(f"| {batch} | {pipe:.3f} | {arenas:.3f} |")
    writer.close()
    reader.close()
    return "\n".join(lines)


def codec_pipe(run: Any, done: Any) -> None:
    import pickle

    from packrat.pool import tensor_pickle

    pickle.loads(tensor_pickle.dumps(run))
    pickle.loads(tensor_pickle.dumps(done))


def codec_arenas(run: Any, done: Any, writer: Any, reader: Any) -> None:
    from packrat.pool import tensor_pickle

    tensor_pickle.loads(tensor_pickle.dumps(run, writer), reader)  # the worker: views
    tensor_pickle.loads(tensor_pickle.dumps(done, writer), reader, copy=True)  # the engine


def median_ms(step: Callable[[], None], calls: int) -> float:
    for _ in range(WARMUP_CALLS):
        step()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples)


def extract_source(revision: str, into: Path) -> Path:
    """`src/` of `revision`, read from git without touching any worktree."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "src"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def report(
    medians: dict[tuple[str, int], list[float]], variants: Sequence[Variant], base: str
) -> str:
    labels = [v.label for v in variants]
    request_kb = math.prod(REQUEST_SHAPE) * 4 / 1000
    lines = [
        f"| batch | request bytes | {' | '.join(labels)} | after / before (paired) "
        "| saved per call |",
        "| ---: | ---: | " + " | ".join("---:" for _ in labels) + " | ---: | ---: |",
    ]
    for batch in BATCHES:
        cells = [cell(Estimate.of(medians[label, batch])) for label in labels]
        before, after = medians["before", batch], medians["after", batch]
        ratio = Estimate.of([a / b for a, b in zip(after, before, strict=True)])
        saved = statistics.median(b - a for a, b in zip(after, before, strict=True))
        lines.append(
            f"| {batch} | {batch * request_kb:.0f} KB | {' | '.join(cells)} | "
            f"{cell(ratio, 3)} | {saved:.2f} ms |"
        )
    rounds = len(medians["before", BATCHES[0]])
    lines += [
        "",
        f"`Engine.infer` round trip, ms: median over {rounds} rounds of each round's median "
        "call [95% CI]; before = "
        f"{base[:10]}; saved per call = median over rounds of before - after.",
    ]
    for label in labels:
        for batch in BATCHES:
            values = ", ".join(f"{v:.2f}" for v in medians[label, batch])
            lines.append(f"- {label}, batch {batch}, per round: {values}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="revision to compare against (default: merge-base)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=150, help="timed calls per batch, round")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_child(json.loads(args.child))
        return
    base = git("rev-parse", args.base or git("merge-base", "HEAD", "main"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ipc-transport-") as tmp:
        variants = [
            Variant("before", extract_source(base, Path(tmp)), {}),
            Variant("after", REPO / "src", {}),
            Variant("after, pipe", REPO / "src", {"shared_tensors": False}),
        ]
        children = [Child(v) for v in variants]
        try:
            for child in children:
                child.wait_ready()
            medians: dict[tuple[str, int], list[float]] = {
                (v.label, b): [] for v in variants for b in BATCHES
            }
            for number in range(args.rounds):
                turn = number % len(children)
                for child in children[turn:] + children[:turn]:
                    for batch in BATCHES:
                        samples = child.time_calls(batch, args.calls)
                        medians[child.variant.label, batch].append(statistics.median(samples))
        finally:
            for child in children:
                child.stop()
    import torch

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"Measured {when} on {platform.node()}, {len(os.sched_getaffinity(0))} usable CPUs; "
        f"Python {platform.python_version()}, torch {torch.__version__}; HEAD "
        f"{git('rev-parse', '--short', 'HEAD')}; {time.monotonic() - started:.0f} s.\n"
    )
    print(report(medians, variants, base))
    print("\nEncoding alone, in one process (median of calls):\n")
    print(codec_table(args.calls))


if __name__ == "__main__":
    main()
