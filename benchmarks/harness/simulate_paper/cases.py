"""What benchmarks/simulate_paper.py simulates (`Case`: one model on one machine, published or
synthetic) and what it finds per server and batch size (`Point`), with the paper's figures it
is set against."""

from __future__ import annotations

from dataclasses import dataclass

from packrat.optimizer.table import LatencyTable
from packrat.sim import AmdahlFit

SYNTHETIC_FROM = "cloudlab-c6420"
# The paper's microbenchmark speedups over the fat instance, averaged over batch sizes
# (../shared/paper-profiles/README.md); end to end in TorchServe 1.43x-1.83x.
PAPER_MICRO = {"resnet50": 1.53, "inception_v3": 1.52, "gpt2": 1.18, "bert": 1.13}
MIN_FAT_BATCHES = 20  # an open-loop run lasts at least this many of the fat instance's batches


@dataclass(frozen=True)
class Case:
    """One model on one machine: its latency table and, if synthetic, the fit behind it."""

    machine: str
    cores: int
    model: str
    table: LatencyTable
    fit: AmdahlFit | None = None
    fit_kind: str = ""  # FITS key of a synthetic profile

    @property
    def label(self) -> str:
        if self.fit is not None:
            return f"synthetic T={self.cores}, {self.fit_kind}"
        return f"{self.machine} (T={self.cores})"


@dataclass(frozen=True)
class Point:
    """One server at one batch size: its plan for B, the bursts' mean latency, and the open
    loop's rate, latency, batches and switches."""

    policy: str
    plan: str
    burst_ms: float
    rate_rps: float
    open_mean_ms: float
    open_p99_ms: float
    open_batch: float
    open_refused: int
    open_switches: int
