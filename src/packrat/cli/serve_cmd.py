"""`packrat serve`: serve models over HTTP with dynamic batching on pinned instance pools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from packrat.cli.app import SampleOpt, app, err, guard, out
from packrat.controller.batching import BatchingConfig
from packrat.controller.calibration import CalibrationConfig
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.kept_layouts import LAYOUTS_PER_CORE
from packrat.controller.policy import PolicyKind
from packrat.profiler.contention import AUTO_CONTENTION_CORES, ProfileKindSetting

DEFAULT_MODEL = "resnet50"
BATCHING = BatchingConfig()
"""The batching a model gets unless told otherwise: the defaults the help shows."""
CALIBRATION = CalibrationConfig()


@app.command()
def serve(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help=f"Zoo names or model files to serve (default: {DEFAULT_MODEL}); NAME=MODEL "
            "serves MODEL under NAME.",
            show_default=False,
        ),
    ] = None,
    config_path: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file with [server] settings and [[models]] entries."),
    ] = None,
    ts_config_path: Annotated[
        Path | None,
        typer.Option(
            "--ts-config",
            help="TorchServe config.properties to serve from: its addresses, model_store, "
            "load_models, models (batchSize, maxBatchDelay, responseTimeout), job_queue_size, "
            "default_response_timeout, max_request_size and metrics_mode; every other key is "
            "ignored with a warning (docs/torchserve-config.md). Command-line options win over "
            "it, and it wins over --config's [server]; its models are served beside the others.",
        ),
    ] = None,
    metrics_compat: Annotated[
        str | None,
        typer.Option(
            "--metrics-compat",
            help="'torchserve' adds TorchServe's metrics (ts_inference_requests_total, "
            "ts_inference_latency_microseconds, ts_queue_latency_microseconds) beside "
            "Packrat's on /metrics; 'none' [default: none].",
            show_default=False,
        ),
    ] = None,
    cores: Annotated[
        int | None,
        typer.Option("--cores", "-T", help="Use the first T usable cores [default: all]."),
    ] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option(
            "--max-batch-size",
            help=f"Largest batch; plans are made for it [default: {BATCHING.max_batch_size}].",
        ),
    ] = None,
    max_batch_delay_ms: Annotated[
        float | None,
        typer.Option(
            "--max-batch-delay",
            help=f"Milliseconds a batch waits for more [default: {BATCHING.max_batch_delay_ms:g}"
            ": it leaves when the model is free, with what is queued].",
        ),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            "--max-queue",
            help="Requests a model queues; more get 503 with Retry-After "
            f"[default: {BATCHING.max_queue}].",
            show_default=False,
        ),
    ] = None,
    max_queue_wait_ms: Annotated[
        float | None,
        typer.Option(
            "--max-queue-wait",
            help="Once a model's queue has overflowed (--max-queue), until it drains, its queue "
            "is held to this many ms of batches: more waiting get 503 with Retry-After; 0: "
            f"not held [default: {BATCHING.max_queue_wait_ms:g}].",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="What instances run on: auto (the fastest whose answers match torch's fp32 "
            "ones, timed at start-up), torch, onnxruntime or openvino [default: auto, or "
            "$PACKRAT_BACKEND].",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision",
            help="auto (bf16 where the CPU runs it natively and within the error budget), "
            "fp32 (exact) or bf16 [default: auto].",
            show_default=False,
        ),
    ] = None,
    chunks: Annotated[
        bool | None,
        typer.Option(
            "--chunks/--no-chunks",
            help="Instances may run their share of a batch as consecutive chunks where the "
            "profile says that is faster; --no-chunks runs every share whole [default: chunks].",
            show_default=False,
        ),
    ] = None,
    calibrate: Annotated[
        bool | None,
        typer.Option(
            "--calibrate/--no-calibrate",
            help="Served batches correct the profile's cells where they keep running far from "
            f"it ({1 + CALIBRATION.tolerance:g}x either way, median of {CALIBRATION.samples}), "
            "and plans follow the corrected cells [default: calibrate].",
            show_default=False,
        ),
    ] = None,
    max_workers: Annotated[
        int | None,
        typer.Option(
            "--max-workers",
            min=1,
            help="Most workers a model keeps where they cannot move (OpenVINO: one per threads "
            "and cores of its plans, each with its own copy of the weights); past it, each "
            f"batch runs on the fastest plan the kept ones can run [default: {LAYOUTS_PER_CORE} "
            "x its cores].",
            show_default=False,
        ),
    ] = None,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            "--max-in-flight",
            help="Inference requests in progress at once, all models together; more get "
            "503 with Retry-After [default: 256].",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Inference and metrics address [default: 127.0.0.1]."),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Inference port, 0 for any [default: 8080].")
    ] = None,
    management_host: Annotated[
        str | None,
        typer.Option("--management-host", help="Management address [default: 127.0.0.1]."),
    ] = None,
    management_port: Annotated[
        int | None, typer.Option("--management-port", help="Management port [default: 8081].")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Metrics port [default: 8082].")
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            "--grpc-port",
            help="KServe v2 gRPC port on the inference address, 0 for any [default: 8001].",
            show_default=False,
        ),
    ] = None,
    grpc: Annotated[
        bool | None,
        typer.Option(
            "--grpc/--no-grpc",
            help="Serve KServe v2 over gRPC too (tritonclient.grpc) [default: on].",
            show_default=False,
        ),
    ] = None,
    profile_path: Annotated[
        Path | None,
        typer.Option("--profile", "-p", help="Profile to plan with (one model only)."),
    ] = None,
    sample_request: SampleOpt = None,
    plan: Annotated[
        str | None,
        typer.Option("--plan", help="Run this plan instead of the optimal one, e.g. '<2,1,8>'."),
    ] = None,
    fat: Annotated[
        bool, typer.Option("--fat", help="Run the fat instance (one instance, all cores).")
    ] = False,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="How plans follow the load: 'auto' runs each batch on the optimal plan for "
            "its size, 'follow' on the plan for the batch size estimated from the queue "
            "(smoothed, the paper's), 'fixed' always on the plan for --max-batch-size "
            f"[default: {PolicyKind.AUTO}].",
            show_default=False,
        ),
    ] = None,
    estimator: Annotated[
        str | None,
        typer.Option(
            "--estimator",
            help="Settings of the 'follow' estimator, e.g. 'alpha=0.25,window=8,cooldown_s=1': "
            "weight of the newest queue depth, estimates the mode is taken over, least "
            f"seconds between two changes [default: {EstimatorConfig().describe()}].",
            show_default=False,
        ),
    ] = None,
    profile_kind: Annotated[
        str | None,
        typer.Option(
            "--profile-kind",
            help="How a model without a cached profile is profiled on first start: "
            "'isolated' (each cell alone), 'contention' (each cell beside copies of itself "
            "on the other cores, as plans run; see packrat profile --contention) or 'auto': "
            f"contention on 2 to {AUTO_CONTENTION_CORES} cores, isolated on more "
            f"[default: {ProfileKindSetting.AUTO}].",
            show_default=False,
        ),
    ] = None,
    batch_timeout_s: Annotated[
        float | None,
        typer.Option(
            "--batch-timeout",
            help="Seconds a worker may take on one batch before it is killed and replaced "
            "(its requests get 503) [default: 120].",
            show_default=False,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="File whose first line is the bearer token the inference and management "
            "APIs require (else $PACKRAT_TOKEN; health checks and /metrics stay open).",
        ),
    ] = None,
    model_store: Annotated[
        Path | None,
        typer.Option("--model-store", help="Directory model files are loaded from."),
    ] = None,
    keep_freed_memory: Annotated[
        bool | None,
        typer.Option(
            "--keep-freed-memory/--release-freed-memory",
            help="Workers keep freed memory in their heap [default: keep].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve models: TorchServe inference and management APIs, KServe v2 (HTTP, gRPC), metrics.

    Each model is profiled on first start (cached) and run on pinned instances; requests are
    batched dynamically, and each batch runs on the optimizer's plan for its size (--policy),
    split across the instances. Plans switch in place between batches, in about a
    millisecond. SIGTERM or Ctrl-C drains in-flight requests and exits 0.
    """

    def body() -> None:
        from packrat.server.launch import launch
        from packrat.server.launch_config import (
            LaunchConfig,
            load_config_file,
            with_cli,
            with_ts_models,
            with_ts_settings,
        )
        from packrat.server.listen import run_event_loop
        from packrat.server.ts_config import read_ts_config

        base = load_config_file(config_path) if config_path is not None else LaunchConfig()
        ts = read_ts_config(ts_config_path) if ts_config_path is not None else None
        if ts is not None:
            for warning in ts.warnings:
                err.print(f"packrat: warning: {warning}", highlight=False, markup=False)
            base = with_ts_settings(base, ts)
        names = models or ([] if base.models or (ts and ts.models) else [DEFAULT_MODEL])
        config = with_cli(
            base,
            names,
            cores=cores,
            max_batch_size=max_batch_size,
            max_batch_delay_ms=max_batch_delay_ms,
            max_queue=max_queue,
            max_queue_wait_ms=max_queue_wait_ms,
            backend=backend,
            precision=precision,
            chunks=chunks,
            calibrate=calibrate,
            max_workers=max_workers,
            max_in_flight=max_in_flight,
            host=host,
            port=port,
            management_host=management_host,
            management_port=management_port,
            metrics_port=metrics_port,
            grpc_port=grpc_port,
            grpc=grpc,
            model_store=model_store,
            keep_freed_memory=keep_freed_memory,
            profile=profile_path,
            sample_request=sample_request,
            plan=plan,
            fat=fat or None,
            policy=policy,
            estimator=estimator,
            profile_kind=profile_kind,
            batch_timeout_s=batch_timeout_s,
            token_file=token_file,
            metrics_compat=metrics_compat,
        )
        if ts is not None:
            config = with_ts_models(config, ts)
        run_event_loop(launch(config, out=out, err=err))

    guard(body)
