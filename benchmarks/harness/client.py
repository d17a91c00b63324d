"""Talking to a started server: a served model's description, a request for it, a warm-up,
progress lines while load runs, and its Prometheus metrics."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from packrat.bench.loadgen import (
    ClosedLoop,
    LoadOptions,
    Payload,
    Phase,
    Protocol,
    Target,
    run_load,
)

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", re.M)


def describe(urls: dict[str, str], model: str) -> dict[str, Any]:
    """The management API's description of `model`'s default version."""
    described = httpx.get(f"{urls['management']}/models/{model}", timeout=30).json()
    return described[0]  # type: ignore[no-any-return]


def payload_for(described: dict[str, Any]) -> Payload:
    """A random request of the model's input (raw bytes for the TorchServe API)."""
    spec = described.get("input_spec")
    if not spec:
        raise SystemExit(f"model {described['name']} declares no input: cannot make requests")
    return Payload.random(Protocol.TORCHSERVE, spec["shape"], spec["dtype"], seed=0)


def warm_up(target: Target, payload: Payload, max_batch_size: int) -> None:
    """Closed loops of 1, 2, 4, ... up to `max_batch_size` clients, three batches' worth
    each: every batch size (and, switching, every plan) runs before the schedule."""
    clients = 1
    while True:
        result = run_load(target, ClosedLoop(clients, requests=3 * clients), LoadOptions(payload))
        failures = result.summary().overall.failures
        if failures:
            raise SystemExit(f"warm-up with {clients} clients failed: {failures}")
        if clients >= max_batch_size:
            return
        clients = min(2 * clients, max_batch_size)


class PhaseProgress:
    """Prints a line as the schedule enters each phase, and every `every_s` seconds."""

    def __init__(self, name: str, phases: Sequence[Phase], every_s: float = 15.0) -> None:
        self._name, self._phases, self._every_s = name, phases, every_s
        self._started = time.monotonic()
        self._printed_s = -math.inf
        self._phase: Phase | None = None

    def start(self, total_units: float, description: str) -> None:
        self._started = time.monotonic()

    def advance(self, units: float, description: str | None = None) -> None:
        now_s = time.monotonic() - self._started
        phase = next((p for p in reversed(self._phases) if p.start_s <= now_s), self._phases[0])
        if phase is not self._phase or now_s - self._printed_s >= self._every_s:
            self._phase, self._printed_s = phase, now_s
            line = f"{now_s:4.0f} s, phase {phase.name}: {description or ''}"
            print(f"[{self._name}] {line}", flush=True)


def scrape(url: str) -> dict[str, float]:
    """Prometheus samples at `url` as {'name{labels}': value}."""
    text = httpx.get(url, timeout=10.0).text
    return {name + (labels or ""): float(value) for name, labels, value in _SAMPLE.findall(text)}


def metric(samples: dict[str, float], name: str, *label_parts: str) -> float:
    """Sum of the samples of `name` whose labels contain every one of `label_parts`."""
    total = 0.0
    for key, value in samples.items():
        base, _, labels = key.partition("{")
        if base == name and all(part in labels for part in label_parts):
            total += value
    return total


def raw_request(spec: dict[str, Any]) -> np.ndarray:
    """A seeded request of the model's input spec (token ids below its `high`)."""
    rng = np.random.default_rng(0)
    if np.dtype(spec["dtype"]).kind in "iu":
        return rng.integers(0, spec.get("high") or 1000, spec["shape"], spec["dtype"])
    return rng.standard_normal(spec["shape"]).astype(spec["dtype"])
