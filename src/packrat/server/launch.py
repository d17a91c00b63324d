"""Start a server from its `LaunchConfig` (`packrat.server.launch_config`, which says how the
command line, a TOML file and a TorchServe config.properties make one): load every model
(profiling on first start), bind the listeners (HTTP, gRPC), serve until a signal.

The Ray Serve replica (`packrat.ray`) reuses the pieces: `prepare`, `open_repository`,
`http_config`, `new_metrics`.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rich.console import Console

from packrat.config import TOKEN_ENV, env_token
from packrat.controller.plan_choice import PlanChoice
from packrat.errors import PackratError
from packrat.pool.config import EngineConfig
from packrat.server.http_auth import check_token
from packrat.server.http_config import HttpConfig
from packrat.server.launch_config import LaunchConfig, model_defaults
from packrat.server.listen import Bound, bind, serve
from packrat.server.repository import Repository, RepositoryDefaults
from packrat.server.ts_config import METRICS_COMPAT

if TYPE_CHECKING:
    from packrat.progress import Progress
    from packrat.server.grpc_listen import GrpcServer
    from packrat.server.metrics import Metrics


async def launch(config: LaunchConfig, *, out: Console, err: Console) -> None:
    """Load every model (profiling on first start), bind the listeners, serve until a signal."""
    from packrat.progress import progress_bar
    from packrat.server.http_inference import create_inference_app
    from packrat.server.http_management import create_management_app
    from packrat.server.metrics import create_metrics_app

    if not config.models:
        raise PackratError("no model to serve: name one, or add [[models]] to the config file")
    default_cores = prepare(config, err)
    # Read before any model loads: a bad token file fails at once, not after profiling.
    http = http_config(config)
    bound: list[Bound] = [bind(listener) for listener in config.listeners()]
    grpc_server = _bind_grpc(config, http, bound)
    metrics = new_metrics(config)
    with progress_bar(err) as bar:
        try:
            repo = await open_repository(config, default_cores, metrics, bar, out)
        except BaseException:
            for b in bound:
                b.sock.close()
            if grpc_server is not None:
                await grpc_server.stop(None)
            raise
    apps = {
        "inference": create_inference_app(repo, http, metrics),
        "management": create_management_app(repo, http),
        "metrics": create_metrics_app(metrics),
    }
    if http.token is not None:
        out.print("inference and management APIs require the API token", highlight=False)
    for b in bound:
        out.print(f"{b.listener.name} API listening on {b.address}", highlight=False)

    async def shutdown() -> None:
        if grpc_server is not None:  # after the drain: its calls have had their answers
            await grpc_server.stop()
        await repo.close()

    if grpc_server is not None:
        from packrat.server.grpc_service import create_grpc_handlers

        await grpc_server.start(create_grpc_handlers(repo, http, metrics))
        out.print(f"grpc API listening on {grpc_server.address}", highlight=False)
    await serve(bound, apps, on_drain=repo.drain, on_shutdown=shutdown)
    out.print("packrat: stopped", highlight=False)


def http_config(config: LaunchConfig) -> HttpConfig:
    """The HTTP edges' settings; reads the API token (PackratError if it is unusable)."""
    return HttpConfig(
        token=api_token(config),
        max_in_flight=config.max_in_flight,
        max_body_bytes=config.max_body_bytes,
    )


def new_metrics(config: LaunchConfig) -> Metrics:
    """Packrat's metrics, with TorchServe's names beside them if `metrics_compat` asks."""
    from packrat.server.metrics import Metrics
    from packrat.server.metrics_torchserve import TorchServeMetrics

    return Metrics(TorchServeMetrics() if config.metrics_compat == METRICS_COMPAT else None)


def prepare(config: LaunchConfig, err: Console) -> tuple[int, ...] | None:
    """Set up this process to serve: one torch thread for the front end, the usable cores
    (saying why on `err` if the CPU quota cut them). Returns the cores for models that name
    none (`config.cores`'s first N), or None for every usable core."""
    from packrat.topology import check_cores, usable_topology

    _one_thread_for_the_front_end()
    usable = usable_topology()
    if usable.note:
        err.print(f"packrat: {usable.note}", highlight=False)
    if config.cores is None:
        return None
    check_cores(config.cores, usable.topology)
    return usable.topology.cpu_ids()[: config.cores]


def repository_defaults(
    config: LaunchConfig, default_cores: tuple[int, ...] | None
) -> RepositoryDefaults:
    """What a model registered through the management API gets: the server's settings, as a
    model named on the command line gets them (backend, precision, max_workers, ...)."""
    return RepositoryDefaults(
        cores=default_cores,
        batching=config.batching,
        choice=PlanChoice.following(config.policy),
        **model_defaults(config),
    )


async def open_repository(
    config: LaunchConfig,
    default_cores: tuple[int, ...] | None,
    metrics: Metrics,
    progress: Progress,
    out: Console,
) -> Repository:
    """A repository serving every model of `config` (profiling on first start), its runtimes
    watched by `metrics`; each model's plan and backend printed on `out`. On failure the
    models already started are stopped."""
    from packrat.server.observe import watch

    defaults = repository_defaults(config, default_cores)
    repo = Repository(
        defaults,
        model_store=config.model_store,
        engine_config=EngineConfig(
            keep_freed_memory=config.keep_freed_memory,
            batch_timeout_s=float(config.batch_timeout_s),
        ),
        progress=progress,
        on_start=lambda runtime: watch(runtime, metrics),
        profile_kind=config.profile_kind,
    )
    try:
        for model in config.models:
            if model.cores is None and default_cores is not None:
                model = replace(model, cores=default_cores)
            runtime = await repo.register_model(model, progress=progress)
            out.print(_describe(runtime.describe()), highlight=False, soft_wrap=True)
    except BaseException:
        await repo.close()
        raise
    return repo


def _bind_grpc(config: LaunchConfig, http: HttpConfig, bound: list[Bound]) -> GrpcServer | None:
    """The gRPC server bound on the inference host (None if turned off); importing grpc only
    when it serves. Closes the HTTP sockets if it cannot bind."""
    if not config.grpc:
        return None
    from packrat.server.grpc_listen import bind_grpc

    try:
        return bind_grpc(config.host, config.grpc_port, max_message_bytes=http.max_body_bytes)
    except PackratError:
        for b in bound:
            b.sock.close()
        raise


def api_token(config: LaunchConfig) -> str | None:
    """The bearer token both APIs require: the first line of `token_file`, else the
    PACKRAT_TOKEN environment variable, else None (no token). PackratError if the file
    cannot be read or the token is unusable (too short, spaces)."""
    token: str | None = None
    where = TOKEN_ENV
    if config.token_file is not None:
        where = str(config.token_file)
        try:
            lines = config.token_file.read_text().splitlines()
        except OSError as exc:
            raise PackratError(f"cannot read token file {where}: {exc.strerror}") from None
        token = lines[0].strip() if lines else ""
    else:
        token = env_token()
    if token is None:
        return None
    try:
        return check_token(token)
    except ValueError as exc:
        raise PackratError(f"{where}: {exc}") from None


def _describe(info: Any) -> str:
    plan = info.get("plan", {})
    instances = ", ".join(
        f"{i.get('threads')}t x b{i.get('batch')} on cores {i.get('cores')}"
        for i in info.get("instances", [])
    )
    backend = info.get("backend") or {}
    text = (
        f"serving {info.get('name')} v{info.get('version')}: plan {plan.get('describe', plan)} "
        f"for batch {info.get('batching', {}).get('max_batch_size')} "
        f"(policy {info.get('policy')}); instances: {instances}"
    )
    pool = info.get("pool") or {}
    if pool.get("workers", 0) > len(info.get("instances", [])):
        text += f"; {pool['workers']} workers with the spares"
        if pool.get("rss_bytes"):
            text += f", {pool['rss_bytes'] / 2**30:.1f} GiB resident"
    kept = info.get("workers_kept")
    if kept:
        text += (
            f"\n  workers kept: {kept['kept']} of the {kept['needed']} its optimal plans need "
            f"(max_workers {info.get('max_workers')}; they cannot move): its batches run "
            f"{kept['mean_slowdown']:.3f}x the optimal plans' predicted latency on average, "
            f"{kept['max_slowdown']:.3f}x at most"
        )
    if backend:
        text += f"\n  backend {backend.get('reason')}"
        for candidate, verdict in backend.get("candidates", {}).items():
            if verdict != "chosen":
                text += f"\n    {candidate}: {verdict}"
        for candidate, found in backend.get("accuracy", {}).items():
            text += f"\n    {candidate} against torch fp32: {found.get('summary')}"
        for key, what in (("backends_by_threads", "backends"), ("chunks_by_threads", "chunks")):
            for threads, runs in backend.get(key, {}).items():
                text += f"\n    {what} on {threads} threads: batches {', '.join(runs)}"
    return text


def _one_thread_for_the_front_end() -> None:
    """The server process only decodes payloads; torch's intra-op pool would wake a thread per
    core for tiny operations and compete with the instances for their cores."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # refused once torch has run parallel work
        torch.set_num_interop_threads(1)
