"""One Ray Serve replica: a Packrat server on the cores of the node it runs on.

The replica loads its models as `packrat serve` does (`launch.open_repository`: profile on
first start, plan, start pinned workers on every core the node gives it, with its cgroup quota
applied), then serves Packrat's inference app (TorchServe and Open Inference Protocol routes)
as its ASGI ingress, so Ray's HTTP proxy routes requests to it. Its health is its models'
readiness; its metrics are served on the node itself (`metrics_port`, one replica per node),
so Prometheus scrapes each node; shutdown drains the queued requests, then stops the workers.

Ray calls the user constructor, `__serve_build_asgi_app__`, `check_health` and `__del__`
(see `ray.serve.ingress`); nothing here imports ray, so the class is tested without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from packrat.progress import NullProgress
from packrat.server.launch import http_config, new_metrics, open_repository, prepare
from packrat.server.launch_config import LaunchConfig
from packrat.server.listen import Bound, Listener, bind

logger = logging.getLogger(__name__)


class PackratReplica:
    """A Packrat server inside a Ray Serve replica (wrapped by `serve.ingress()` in `app`)."""

    # Ray's ingress wrapper awaits an async constructor (models load without blocking its loop).
    async def __init__(  # type: ignore[misc]
        self, config: LaunchConfig, serve_metrics: bool = True
    ) -> None:
        from rich.console import Console

        console = Console(stderr=True, highlight=False, soft_wrap=True)
        self._config = config
        self._http = http_config(config)
        self._metrics = new_metrics(config)
        cores = prepare(config, console)
        self._repo = await open_repository(config, cores, self._metrics, NullProgress(), console)
        self._metrics_bound: Bound | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        if serve_metrics:
            self._start_metrics()

    def __serve_build_asgi_app__(self) -> Any:
        from packrat.server.http_inference import create_inference_app

        return create_inference_app(self._repo, self._http, self._metrics)

    async def check_health(self) -> None:
        """Healthy while every model is ready (Ray replaces a replica that stays unhealthy)."""
        not_ready = [model.name for model in self._repo.models() if not model.ready]
        if not_ready:
            raise RuntimeError(f"models not ready: {', '.join(not_ready)}")

    async def describe(self) -> dict[str, Any]:
        """This replica: its process, node cores, metrics address and each model's state."""
        return {
            "pid": os.getpid(),
            "cpus": sorted(os.sched_getaffinity(0)),
            "metrics": self._metrics_bound.address if self._metrics_bound else None,
            "models": [runtime.describe() for runtime in self._repo.runtimes()],
        }

    async def __del__(self) -> None:
        """Ray's graceful shutdown: finish the queued requests, stop the workers."""
        try:
            await self._repo.drain()
        finally:
            await self._repo.close()
            if self._metrics_task is not None:
                self._metrics_task.cancel()

    def _start_metrics(self) -> None:
        """Serve `GET /metrics` on this node at (host, metrics_port): per-node metrics."""
        import uvicorn

        from packrat.server.metrics import create_metrics_app

        self._metrics_bound = bind(
            Listener(
                "metrics", self._config.metrics_host or self._config.host, self._config.metrics_port
            )
        )
        config = uvicorn.Config(
            create_metrics_app(self._metrics), log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        sockets = [self._metrics_bound.sock]
        self._metrics_task = asyncio.get_running_loop().create_task(server.serve(sockets))
        logger.info("metrics API listening on %s", self._metrics_bound.address)
