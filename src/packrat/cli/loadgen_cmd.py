"""`packrat loadgen`: send a schedule of requests to a server on this machine and report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from packrat.cli.app import app, err, guard, int_list, out
from packrat.errors import PackratError

if TYPE_CHECKING:
    from packrat.bench.loadgen import Bounds, Payload, Protocol, Schedule


@app.command()
def loadgen(
    url: Annotated[str, typer.Argument(help="Inference API base, e.g. http://127.0.0.1:8080.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name on the server.")],
    protocol: Annotated[
        str, typer.Option("--protocol", help="torchserve (raw body) or v2 (JSON infer).")
    ] = "torchserve",
    rate_rps: Annotated[
        float | None, typer.Option("--rate", help="Open loop: Poisson arrivals, requests/s.")
    ] = None,
    duration_s: Annotated[
        float | None,
        typer.Option("--duration", help="Seconds to run (with --rate or --concurrency)."),
    ] = None,
    steps_text: Annotated[
        str | None,
        typer.Option("--steps", help='Open loop in phases RATE:SECONDS, e.g. "5:10,40:10,5:10".'),
    ] = None,
    trace_path: Annotated[
        Path | None,
        typer.Option("--trace", help="Open loop replaying offsets (s, one a line, or CSV t_s)."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Closed loop: clients sending back to back.")
    ] = None,
    requests: Annotated[
        int | None, typer.Option("--requests", help="Closed loop: stop after this many requests.")
    ] = None,
    requests_max: Annotated[
        int, typer.Option("--requests-max", help="Refuse schedules with more requests.")
    ] = 1_000_000,
    payload_path: Annotated[
        Path | None,
        typer.Option("--payload", help="Request body file (for v2: the whole JSON request)."),
    ] = None,
    shape: Annotated[
        str | None, typer.Option("--shape", help="Random tensor per request, e.g. 3,224,224.")
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="dtype of the random tensor.")] = "float32",
    content_type: Annotated[
        str | None, typer.Option("--content-type", help="Content-Type of each request.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of arrivals and random tensor.")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the full report.")] = None,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write one row per request.")
    ] = None,
    png_path: Annotated[
        Path | None, typer.Option("--png", help="Draw latency against time.")
    ] = None,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Per-request limit, s.")] = 30.0,
    max_in_flight: Annotated[
        int, typer.Option("--max-in-flight", help="Requests outstanding at most; more fail.")
    ] = 4096,
) -> None:
    """Load a model on a server on this machine with an open- or closed-loop schedule.

    Open loop (--rate with --duration, --steps, or --trace): each request is sent at its
    scheduled time, and its latency counts from that time, however late the send. Closed
    loop (--concurrency with --duration and/or --requests): N clients send back to back.
    """

    def body() -> None:
        from packrat.bench import loadgen as lg
        from packrat.progress import progress_bar

        bounds = lg.Bounds(max_requests=requests_max)
        try:
            proto = lg.Protocol(protocol)
        except ValueError:
            raise PackratError(f"--protocol must be torchserve or v2, got {protocol!r}") from None
        target = lg.Target(url, model, proto)
        schedule = _schedule(bounds)
        payload = _payload(proto)
        options = lg.LoadOptions(payload, timeout_s, max_in_flight, bounds)
        with progress_bar(err) as bar:
            result = lg.run_load(target, schedule, options, progress=bar)
        out.print(lg.summary_table(result.summary(), f"{model} at {target.url}"))
        if json_path is not None:
            lg.write_json(result, json_path)
        if csv_path is not None:
            lg.write_csv(result.records, csv_path)
        if png_path is not None:
            lg.plot_timeline(result, png_path)
        written = [str(p) for p in (json_path, csv_path, png_path) if p is not None]
        if written:
            out.print(f"wrote {', '.join(written)}")

    def _schedule(bounds: Bounds) -> Schedule:
        from packrat.bench import loadgen as lg

        modes = {
            "--rate": rate_rps is not None,
            "--steps": steps_text is not None,
            "--trace": trace_path is not None,
            "--concurrency": concurrency is not None,
        }
        chosen = [name for name, given in modes.items() if given]
        if len(chosen) != 1:
            raise PackratError(
                "give exactly one of --rate, --steps, --trace or --concurrency"
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        if requests is not None and concurrency is None:
            raise PackratError("--requests applies to closed loops (--concurrency) only")
        if duration_s is not None and (steps_text is not None or trace_path is not None):
            raise PackratError(f"--duration does not apply to {chosen[0]}")
        if rate_rps is not None:
            if duration_s is None:
                raise PackratError("--rate needs --duration")
            return lg.poisson(rate_rps, duration_s, seed, bounds)
        if steps_text is not None:
            return lg.steps(lg.parse_steps(steps_text), seed, bounds)
        if trace_path is not None:
            return lg.read_trace(trace_path, bounds)
        if concurrency is None:
            raise PackratError("give one of --rate, --steps, --trace or --concurrency")
        if duration_s is None and requests is None:
            raise PackratError("--concurrency needs --duration, --requests, or both")
        return lg.ClosedLoop(concurrency, duration_s, requests)

    def _payload(proto: Protocol) -> Payload:
        from packrat.bench import loadgen as lg

        if payload_path is not None and shape is not None:
            raise PackratError("give --payload FILE or --shape, not both")
        if payload_path is not None:
            default_type = "application/json" if proto is lg.Protocol.V2 else None
            chosen_type = content_type or default_type or "application/octet-stream"
            return lg.Payload.from_file(payload_path, chosen_type)
        if shape is not None:
            return lg.Payload.random(proto, int_list(shape, "--shape"), dtype, seed, content_type)
        raise PackratError("give --payload FILE or --shape of a random tensor, e.g. 3,224,224")

    guard(body)
