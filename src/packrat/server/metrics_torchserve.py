"""TorchServe's Prometheus metrics, by its names and labels, beside Packrat's own.

With `packrat serve --metrics-compat torchserve` (or `metrics_mode=prometheus` in a
config.properties), `/metrics` also serves the three per-model series TorchServe 0.12 exposes
in prometheus mode (ts/configs/metrics.yaml, docs/metrics.md), so dashboards built on them
keep working:

  ts_inference_requests_total{model_name,model_version,hostname}        counter, Count
      inference requests received for a served model, whatever their answer
  ts_inference_latency_microseconds{model_name,model_version,hostname}  counter, Microseconds
      total arrival-to-response time of the requests answered 2xx
  ts_queue_latency_microseconds{model_name,model_version,hostname}      counter, Microseconds
      total time requests waited in the model's queue before their batch ran

They are fed by the same events as Packrat's series (`Metrics.observe_request`, each batch's
record). One difference: TorchServe labels a request that names no version
model_version="default"; here the label is the version that served it, so the three series
always share their labels.

prometheus_client appends `_total` to every counter's name, and TorchServe's two latency
counters have none, so these series are written here in the text format, exactly as
TorchServe writes them (HELP, TYPE counter, one sample per model version).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from threading import Lock

_SERIES = (
    ("ts_inference_requests_total", "Count"),
    ("ts_inference_latency_microseconds", "Microseconds"),
    ("ts_queue_latency_microseconds", "Microseconds"),
)
NAMES = tuple(name for name, _ in _SERIES)


class TorchServeMetrics:
    """TorchServe's three per-model counters (thread-safe)."""

    def __init__(self, hostname: str | None = None) -> None:
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self._lock = Lock()
        self._values: dict[str, dict[tuple[str, str], float]] = {name: {} for name in NAMES}

    def observe_request(self, model: str, version: str, code: int, seconds: float) -> None:
        """One inference request of `model` `version` answered `code` after `seconds`."""
        with self._lock:
            self._add("ts_inference_requests_total", model, version, 1.0)
            if 200 <= code < 300:
                self._add("ts_inference_latency_microseconds", model, version, seconds * 1e6)

    def observe_queue(self, model: str, version: str, waits_s: Iterable[float]) -> None:
        """The requests of one batch waited `waits_s` seconds each in the queue."""
        total_us = sum(max(0.0, wait) for wait in waits_s) * 1e6
        with self._lock:
            self._add("ts_queue_latency_microseconds", model, version, total_us)

    def exposition(self) -> bytes:
        """The series in the Prometheus text format, as TorchServe writes them."""
        lines: list[str] = []
        with self._lock:
            for name, unit in _SERIES:
                lines.append(
                    f"# HELP {name} Torchserve prometheus counter metric with unit: {unit}"
                )
                lines.append(f"# TYPE {name} counter")
                for (model, version), value in sorted(self._values[name].items()):
                    labels = ",".join(
                        f'{key}="{_escape(text)}"'
                        for key, text in (
                            ("model_name", model),
                            ("model_version", version),
                            ("hostname", self.hostname),
                        )
                    )
                    lines.append(f"{name}{{{labels}}} {value!r}")  # 3.0, as Java writes it
        return ("\n".join(lines) + "\n").encode()

    def _add(self, name: str, model: str, version: str, amount: float) -> None:
        series = self._values[name]
        series[(model, version)] = series.get((model, version), 0.0) + amount


def _escape(text: str) -> str:
    """A label value as the text format needs it: backslash, quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
