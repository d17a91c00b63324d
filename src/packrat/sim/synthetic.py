"""Synthetic profiles for machines larger than any measured: a model fitted to a real one.

For each profiled batch size b, the latency of one instance with t threads is modelled as

    L(t, b) = L1(b) * (s(b) + (1 - s(b)) / t) + c * t

Amdahl's law (a serial share s(b) of the single-thread work L1(b), the rest split over t
threads) plus a cost per thread c (each parallel region's fork, barrier and scheduling grow
with the threads: what makes a fat instance's returns diminish, then reverse). Written as
a(b) + d(b) / t + c * t with a = L1 * s, d = L1 * (1 - s), the coefficients are fitted by
non-negative least squares on the relative error over the profile's thread counts 1 and 2,
4, ... (`fitted_threads`), a(b) and d(b) per batch size and c shared by all, then the model
is evaluated for t = 1 and every even t up to the synthetic machine's cores. It knows nothing
of sockets, memory bandwidth or clocks on the larger machine: it extrapolates the one measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from packrat.optimizer.table import LatencyTable
from packrat.profiler.profile_file import Profile
from packrat.sim.service import SimError
from packrat.stats import CellStats


@dataclass(frozen=True)
class AmdahlFit:
    """The fitted coefficients per batch size (ms): L(t, b) = serial + parallel / t +
    per_thread * t, and the fit's relative errors on the cells it was fitted to."""

    batches: tuple[int, ...]
    serial_ms: tuple[float, ...]
    parallel_ms: tuple[float, ...]
    per_thread_ms: tuple[float, ...]
    rms_rel_error: float
    max_rel_error: float

    def latency_ms(self, threads: int, batch: int) -> float:
        """The model's L(threads, batch) for a fitted batch size."""
        j = self.batches.index(batch)
        return self.serial_ms[j] + self.parallel_ms[j] / threads + self.per_thread_ms[j] * threads

    def serial_share(self, batch: int) -> float:
        """s(b): the serial part of the single-thread work."""
        j = self.batches.index(batch)
        work = self.serial_ms[j] + self.parallel_ms[j]
        return self.serial_ms[j] / work if work > 0 else math.nan

    def table(self, cores: int) -> LatencyTable:
        """The model's latency table for `fitted_threads(cores)` and the fitted batch sizes."""
        cells = {(t, b): self.latency_ms(t, b) for t in fitted_threads(cores) for b in self.batches}
        return LatencyTable.from_cells(cells)


def fit_profile(table: LatencyTable, per_thread: bool = True) -> AmdahlFit:
    """The model fitted to `table`'s cells of 1 and of even thread counts (`fitted_threads`):
    a and d per batch size (each needs 3 such thread counts profiled), and one per-thread
    cost c for all of them (a cost per parallel region and thread does not depend on the
    batch; fitted per batch size it follows the noise, and 128 threads magnify it).
    `per_thread=False` fits Amdahl's law alone (c = 0): latency then never grows with the
    threads, the most favourable extrapolation for a fat instance.

    Raises SimError when no batch size has enough thread counts to fit."""
    chosen = np.array([t in fitted_threads(table.max_threads) for t in table.threads])
    columns: list[tuple[int, npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
    for j, batch in enumerate(table.batches):
        column = table.latency_ms[:, j]
        known = np.isfinite(column) & chosen
        if known.sum() >= 3:
            threads = np.asarray(table.threads, dtype=np.float64)[known]
            columns.append((batch, threads, column[known]))
    if not columns:
        raise SimError("no batch size of the profile has 3 or more thread counts to fit")
    per_thread_ms = _best_per_thread_ms(columns) if per_thread else 0.0
    batches, coefs, errors = [], [], []
    for batch, threads, measured in columns:
        a, d = _fit_one(threads, measured, per_thread_ms)
        model = a + d / threads + per_thread_ms * threads
        batches.append(batch)
        coefs.append((a, d))
        errors.append(model / measured - 1.0)
    rel = np.concatenate(errors)
    return AmdahlFit(
        batches=tuple(batches),
        serial_ms=tuple(a for a, _ in coefs),
        parallel_ms=tuple(d for _, d in coefs),
        per_thread_ms=tuple(per_thread_ms for _ in coefs),
        rms_rel_error=float(np.sqrt(np.mean(rel**2))),
        max_rel_error=float(np.max(np.abs(rel))),
    )


def fitted_threads(cores: int) -> tuple[int, ...]:
    """The thread counts fitted and synthesized: 1 and the even counts up to `cores`.

    The published profiles run odd thread counts far slower than their even neighbours
    (BERT at batch 8 on the c6420: 141 ms on 3 threads, 77 on 4; 109 on 5, 60 on 6), which no
    smooth model fits and no optimal plan uses, so the model leaves them out."""
    return (1, *range(2, cores + 1, 2))


def synthetic_profile(
    profile: Profile, cores: int, per_thread: bool = True
) -> tuple[Profile, AmdahlFit]:
    """A profile of `profile`'s model on a synthetic machine of `cores` cores (thread counts
    `fitted_threads(cores)`, the profiled batch sizes), every cell from the model fitted with
    or without the per-thread cost (`fit_profile`); and the fit."""
    if cores < 1:
        raise SimError(f"a synthetic machine needs >= 1 core, got {cores}")
    fit = fit_profile(profile.latency_table(), per_thread)
    cells = {
        (t, b): _cell(fit.latency_ms(t, b)) for t in fitted_threads(cores) for b in fit.batches
    }
    model = "Amdahl + per-thread cost" if per_thread else "Amdahl"
    source = f"synthetic:{cores} cores, {model} fit of {profile.source}"
    synthetic = Profile(
        model_name=profile.model_name,
        content_hash=f"synthetic:{cores}:{profile.content_hash}",
        machine={
            "cpu_model": f"synthetic, {cores} cores (fitted to {profile.machine.get('cpu_model')})",
            "physical_cores": cores,
            "usable_cores": cores,
        },
        torch_version=profile.torch_version,
        cells=cells,
        source=source,
    )
    return synthetic, fit


def _cell(ms: float) -> CellStats:
    return CellStats(mean_ms=ms, p50_ms=ms, p95_ms=ms, stdev_ms=0.0, n=1)


Column = tuple[int, npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _best_per_thread_ms(columns: list[Column]) -> float:
    """The c >= 0 minimizing the total squared relative error of all batch sizes, each with
    its own best a and d: a grid over [0, the largest c any cell allows], then a golden
    section search around the best grid point."""

    def sse(c: float) -> float:
        total = 0.0
        for _, threads, measured in columns:
            a, d = _fit_one(threads, measured, c)
            total += float(np.sum(((a + d / threads + c * threads) / measured - 1.0) ** 2))
        return total

    ceiling = min(float(np.min(measured / threads)) for _, threads, measured in columns)
    grid = np.concatenate([[0.0], np.geomspace(ceiling * 1e-4, ceiling, 120)])
    values = [sse(float(c)) for c in grid]
    k = int(np.argmin(values))
    lo, hi = float(grid[max(k - 1, 0)]), float(grid[min(k + 1, grid.size - 1)])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if sse(x1) <= sse(x2):
            hi = x2
        else:
            lo = x1
    best = (lo + hi) / 2.0
    return best if sse(best) <= values[k] else float(grid[k])


def _fit_one(
    threads: npt.NDArray[np.float64], measured: npt.NDArray[np.float64], per_thread_ms: float
) -> tuple[float, float]:
    """(a, d) >= 0 minimizing sum(((a + d/t + c t) / L - 1)^2) for the given c: the best
    least-squares fit over the subsets of free coefficients with a non-negative solution
    (exact NNLS for two unknowns)."""
    basis = np.stack([np.ones_like(threads), 1.0 / threads], axis=1) / measured[:, None]
    target = 1.0 - per_thread_ms * threads / measured
    best: tuple[float, tuple[float, float]] = (math.inf, (0.0, 0.0))
    for free in ((0,), (1,), (0, 1)):
        sub = basis[:, list(free)]
        solution, *_ = np.linalg.lstsq(sub, target, rcond=None)
        if (solution < 0).any():
            continue
        residual = float(np.sum((sub @ solution - target) ** 2))
        if residual < best[0]:
            coef = [0.0, 0.0]
            for index, value in zip(free, solution, strict=True):
                coef[index] = float(value)
            best = (residual, (coef[0], coef[1]))
    return best[1]
