"""Prometheus metrics of one server: what the HTTP apps and the runtime record, and `/metrics`.

Each `Metrics` owns its own `CollectorRegistry`, so servers (and tests) in one process never
share or collide on series. prometheus-client is thread-safe: the runtime may record from
any thread.

Series (label `model` is the model name):
  packrat_requests_total{model,code}            requests answered, by HTTP status
  packrat_request_latency_seconds{model}        arrival to response, seconds (histogram)
  packrat_batch_size{model}                     requests per batch run (histogram)
  packrat_queue_depth{model}                    requests waiting for a batch (gauge)
  packrat_plan{model,plan}                      1 for the plan in use (gauge)
  packrat_reconfigurations_total{model}         changes of plan
  packrat_reconfiguration_seconds{model}        time each change took (histogram)
  packrat_batch_latency_seconds{model}          batch dispatch to its last reply (histogram)
  packrat_instance_busy_seconds_total{model,instance}   seconds each instance spent computing
                                                (its handler's time, timed in the worker)
  packrat_backend{model,backend,precision}      1 for what the instances run on (gauge)
  packrat_backend_accuracy{model,candidate,measure}   each candidate compared with torch's
                                                fp32 outputs at start-up: min_cosine,
                                                max_abs_error, top1_agreement (gauge)

With a `TorchServeMetrics` (`--metrics-compat torchserve`), TorchServe's ts_* series too,
from the same events (`packrat.server.metrics_torchserve`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from threading import Lock
from time import perf_counter
from typing import Any

from fastapi import APIRouter, FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.responses import Response

from packrat.server.errors import ServerError
from packrat.server.metrics_torchserve import TorchServeMetrics
from packrat.server.responses import http_status, install_error_handlers

LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The metrics of one server, in their own registry (`self.registry`)."""

    def __init__(self, torchserve: TorchServeMetrics | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.torchserve = torchserve
        self._requests = Counter(
            "packrat_requests",
            "Inference requests answered, by HTTP status code.",
            ("model", "code"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "packrat_request_latency_seconds",
            "Inference request latency from arrival to response, in seconds.",
            ("model",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._batch_size = Histogram(
            "packrat_batch_size",
            "Requests per batch the model ran.",
            ("model",),
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "packrat_queue_depth",
            "Requests waiting to join a batch.",
            ("model",),
            registry=self.registry,
        )
        self._plan = Gauge(
            "packrat_plan",
            "1 for the plan (set of instances) the model runs.",
            ("model", "plan"),
            registry=self.registry,
        )
        self._backend = Gauge(
            "packrat_backend",
            "1 for the backend and precision the model's instances run on.",
            ("model", "backend", "precision"),
            registry=self.registry,
        )
        self._accuracy = Gauge(
            "packrat_backend_accuracy",
            "Each candidate backend's outputs against torch's fp32 ones, measured at start-up "
            "(min_cosine, max_abs_error, top1_agreement).",
            ("model", "candidate", "measure"),
            registry=self.registry,
        )
        self._batch_latency = Histogram(
            "packrat_batch_latency_seconds",
            "Seconds from dispatching a batch to its last instance's reply.",
            ("model",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._switches = Counter(
            "packrat_reconfigurations",
            "Changes of plan (instances re-pinned and re-threaded in place).",
            ("model",),
            registry=self.registry,
        )
        self._switch_latency = Histogram(
            "packrat_reconfiguration_seconds",
            "Seconds each change of plan took, between two batches.",
            ("model",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._restarts = Counter(
            "packrat_instance_restarts",
            "Instances replaced after their worker died or missed the batch deadline.",
            ("model",),
            registry=self.registry,
        )
        self._corrections = Counter(
            "packrat_profile_corrections",
            "Profile cells corrected because the batches served on them kept running far "
            "from the profile (the model then plans on the served latency).",
            ("model",),
            registry=self.registry,
        )
        self._busy = Counter(
            "packrat_instance_busy_seconds",
            "Seconds each instance spent computing (preprocess + inference + postprocess).",
            ("model", "instance"),
            registry=self.registry,
        )
        self._lock = Lock()
        self._plans: dict[str, str] = {}
        self._backends: dict[str, list[tuple[str, ...]]] = {}  # model -> its series' labels

    def observe_request(
        self, model: str, code: int, seconds: float, version: str | None = None
    ) -> None:
        """One inference request of `model` (`version`: the one that served it; None: not
        known, TorchServe's "default") answered with HTTP status `code` after `seconds`
        (arrival to response)."""
        self._requests.labels(model, str(code)).inc()
        self._latency.labels(model).observe(seconds)
        if self.torchserve is not None:
            self.torchserve.observe_request(model, version or "default", code, seconds)

    def observe_queue(self, model: str, version: str, waits_s: Sequence[float]) -> None:
        """The requests of one batch of `model` `version` waited `waits_s` seconds each
        between arrival in its queue and the batch's dispatch."""
        if self.torchserve is not None:
            self.torchserve.observe_queue(model, version, waits_s)

    @contextmanager
    def time_request(self, model: str, version: str | None = None) -> Iterator[None]:
        """Record the request handled inside the block: status 200 if it completes, the
        ServerError's status if one escapes, 500 for any other exception."""
        start = perf_counter()
        code = 500
        try:
            yield
            code = 200
        except ServerError as exc:
            code = http_status(exc)
            raise
        finally:
            self.observe_request(model, code, perf_counter() - start, version)

    def observe_batch(
        self,
        model: str,
        per_instance_sizes: Sequence[int],
        busy_s: Sequence[float],
        wall_s: float,
    ) -> None:
        """One batch ran, split into `per_instance_sizes[k]` requests for instance k (plan
        order; label `instance` is k), which computed for `busy_s[k]` seconds; `wall_s` from
        dispatch to the last reply."""
        self._batch_size.labels(model).observe(sum(per_instance_sizes))
        self._batch_latency.labels(model).observe(max(0.0, wall_s))
        for instance, seconds in enumerate(busy_s):
            self._busy.labels(model, str(instance)).inc(max(0.0, seconds))

    def observe_switch(self, model: str, plan: str, seconds: float) -> None:
        """`model` changed to `plan`, which took `seconds`."""
        self._switches.labels(model).inc()
        self._switch_latency.labels(model).observe(max(0.0, seconds))
        self.set_plan(model, plan)

    def observe_restarts(self, model: str, count: int) -> None:
        """`count` lost instances of `model` were replaced."""
        self._restarts.labels(model).inc(count)

    def observe_correction(self, model: str) -> None:
        """Served batches corrected a cell of `model`'s profile."""
        self._corrections.labels(model).inc()

    def set_queue_depth(self, model: str, depth: int) -> None:
        """`depth` requests of `model` are waiting for a batch."""
        self._queue_depth.labels(model).set(depth)

    def set_plan(self, model: str, plan: str) -> None:
        """`model` now runs `plan` (e.g. "2x8+1x4"): its series reads 1, the previous one is
        removed."""
        with self._lock:
            previous = self._plans.get(model)
            if previous is not None and previous != plan:
                self._plan.remove(model, previous)
            self._plans[model] = plan
            self._plan.labels(model, plan).set(1)

    def set_backend(self, model: str, backend: Mapping[str, Any]) -> None:
        """`model` runs on `backend` (its describe: backend, precision, accuracy of each
        candidate compared with the reference)."""
        with self._lock:
            self._forget_backend(model)
            labels = (model, str(backend.get("backend")), str(backend.get("precision")))
            self._backend.labels(*labels).set(1)
            series: list[tuple[str, ...]] = [labels]
            for candidate, found in backend.get("accuracy", {}).items():
                for measure in ("min_cosine", "max_abs_error", "top1_agreement"):
                    if found.get(measure) is not None:
                        self._accuracy.labels(model, candidate, measure).set(found[measure])
                        series.append((model, candidate, measure))
            self._backends[model] = series

    def _forget_backend(self, model: str) -> None:
        series = self._backends.pop(model, [])
        if series:
            self._backend.remove(*series[0])
        for labels in series[1:]:
            self._accuracy.remove(*labels)

    def forget_model(self, model: str) -> None:
        """Drop `model`'s gauges after it is unregistered (counters stay: they are totals)."""
        with self._lock:
            plan = self._plans.pop(model, None)
            if plan is not None:
                self._plan.remove(model, plan)
            self._forget_backend(model)
        with suppress(KeyError):  # no depth was ever set
            self._queue_depth.remove(model)

    def exposition(self) -> bytes:
        """All series in the Prometheus text format (TorchServe's after Packrat's)."""
        text = generate_latest(self.registry)
        if self.torchserve is not None:
            text += self.torchserve.exposition()
        return text


def metrics_router(metrics: Metrics) -> APIRouter:
    """`GET /metrics`, for the metrics app and the inference app alike."""
    router = APIRouter()

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
        summary="Prometheus metrics",
    )
    async def get_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


def create_metrics_app(metrics: Metrics) -> FastAPI:
    """An app serving only `GET /metrics`, for a separate metrics port."""
    app = FastAPI(title="Packrat metrics")
    install_error_handlers(app)
    app.include_router(metrics_router(metrics))
    return app
