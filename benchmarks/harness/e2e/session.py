"""What the end-to-end suite (benchmarks/e2e.py) keeps about a run as a whole, besides its
servers' runs: the command, options and versions, and per model the rates, the plans the
profile predicts and the order the systems ran in (session.json in the work directory)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelSession:
    """What the run found for one model besides its servers' runs."""

    model: str
    capacity_rps: float  # the fat instance at the largest batch, from the profile
    rates_rps: list[float]
    micro_file: str  # the microbenchmark's JSON, relative to the work directory
    # Per burst size N: Packrat's plan for N and its latency, and the fat
    # instance's, from the profile (ms).
    predicted: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Per batch size b = 1..--max-batch-size, as `packrat serve` plans (the profile
    # interpolated between its batch sizes): the optimal plan and its latency, and the fat
    # instance's, ms; what auto's switch rule weighs.
    every_batch: dict[int, dict[str, Any]] = field(default_factory=dict)
    order: list[list[str]] = field(default_factory=list)  # System.key, per round
    seconds: dict[str, float] = field(default_factory=dict)  # per stage
    # The machine's 1-minute load average at the end of each stage: about 2 (our own work on
    # 2 cores) on a quiet machine; more means other processes competed for the cores.
    load_avg: dict[str, float] = field(default_factory=dict)


@dataclass
class Session:
    """The run as a whole: its command, when, where, options, versions, and each model's
    findings."""

    command: str
    measured: str
    options: dict[str, Any]
    versions: dict[str, str]
    cores: int
    machine: str = ""
    models: list[ModelSession] = field(default_factory=list)
    total_s: float = math.nan
    notes: list[str] = field(default_factory=list)


def save_session(session: Session, workdir: Path) -> None:
    (workdir / "session.json").write_text(json.dumps(asdict(session), indent=1, default=str))


def load_session(workdir: Path) -> Session:
    raw = json.loads((workdir / "session.json").read_text())
    models = []
    for m in raw.pop("models"):
        m["predicted"] = {int(k): v for k, v in m["predicted"].items()}
        m["every_batch"] = {int(k): v for k, v in m.get("every_batch", {}).items()}
        models.append(ModelSession(**m))
    return Session(**raw, models=models)
