"""The in-process side of benchmarks/serve_overhead.py, run in a child process (the client
stays free of torch): the model's handler timed as a worker runs it, and the steps timed alone
(the engine round trip, called and awaited on an event loop, and a pipe round trip of the
pickled messages)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from harness.serve_overhead.timing import (
    IDLE_GAP_S,
    WARMUP_REQUESTS,
    Latency,
    timed_after_idle,
    timed_ms,
)


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
        **engine_round_trip(model, requests),
    }


def engine_round_trip(model: str, requests: int) -> dict[str, Any]:
    """`Engine.infer([x])` on a fat instance (the pool the server uses, without HTTP), with
    `handle` timed inside the worker: the worker's own handle time and the IPC around it. In
    the same rounds, the batch awaited on an event loop as the server runs it
    (`run_split_on_loop`), and as it ran before, `Engine.infer` in a thread
    (`asyncio.to_thread`)."""
    import asyncio
    import math

    from packrat.pool.engine import Engine
    from packrat.types import InstanceSpec, Plan

    cores = tuple(sorted(os.sched_getaffinity(0)))
    plan = Plan(len(cores), 1, math.nan, (InstanceSpec(len(cores), 1, cores),))
    timed: dict[str, list[float]] = {"called": [], "on_loop": [], "in_thread": []}
    in_worker: list[float] = []

    async def rounds(engine: Engine, x: Any) -> None:
        for i in range(WARMUP_REQUESTS + requests):
            started = time.perf_counter()
            [(_, handle_ms)] = engine.infer([x])
            called = time.perf_counter()
            await engine.run_split_on_loop([x], [1])
            on_loop = time.perf_counter()
            await asyncio.to_thread(engine.infer, [x])
            in_thread = time.perf_counter()
            if i >= WARMUP_REQUESTS:
                timed["called"].append((called - started) * 1000.0)
                timed["on_loop"].append((on_loop - called) * 1000.0)
                timed["in_thread"].append((in_thread - on_loop) * 1000.0)
                in_worker.append(handle_ms)

    with Engine(TimedZooSource(model), plan) as engine:
        asyncio.run(rounds(engine, engine.example_requests(1)[0]))
    return {
        "engine_infer": Latency.of(timed["called"]).__dict__,
        "engine_on_loop": Latency.of(timed["on_loop"]).__dict__,
        "engine_in_thread": Latency.of(timed["in_thread"]).__dict__,
        "handle_in_worker": Latency.of(in_worker).__dict__,
    }


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
