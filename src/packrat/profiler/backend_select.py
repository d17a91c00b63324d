"""Serve a model on the fastest backend and precision that keeps its answers: convert each
candidate once (cached), compare its outputs with torch's fp32 reference, time it on a few
cells, and choose (`backend_choice.choose`).

The candidates for `--backend auto`: torch fp32 (the reference, always), ONNX Runtime fp32,
OpenVINO fp32 and, where the CPU computes bf16 natively and `--precision` allows it, OpenVINO
bf16. A named backend has only its own candidates. fp32 conversions must match the reference
to the exact budget (they only sum in another order); a lossy one must stay within the error
budget to be served at all.

The probe cells are the shapes plans are made of: every core on a batch of 1 and on the
largest batch, and one core on its share of the largest batch. The candidates are timed on
them side by side in pinned workers, in passes whose order reverses each time
(`profiler.side_by_side`: the machine's drift weighs on all alike), with a quick sampling
policy: the choice needs which is fastest, not the profile. The candidates fast on some
cell are kept as contenders (`Selection.contenders`): where there are several, each is
profiled and their plans decide (`profiler.backend_plan`); else the profile is measured for
the chosen one alone.

A choice among several candidates is cached (`<cache>/backends/`), keyed by the model, the
options, the cores and the libraries' versions: a restart reuses it (and the cached
conversion) instead of timing every candidate again; delete the file to choose afresh. A
choice made while a candidate failed to run (its workers died or did not start: perhaps a
passing shortage of memory) is not cached, so the next start times that candidate again
instead of keeping a slower backend for good.

Only models that torch serves from a file of weights and a graph (zoo, TorchScript, .pt2) can
be converted; a handler file, an .onnx or an OpenVINO IR is served by the backend its format
names.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packrat.config import cache_dir
from packrat.errors import ModelError, PackratError
from packrat.models.accuracy import (
    DEFAULT_BUDGET,
    EXACT_BUDGET,
    AccuracyBudget,
    AccuracyReport,
    check_accuracy,
)
from packrat.models.backends import Backend, Precision, library_version
from packrat.models.base import ModelSource
from packrat.models.exported import ExportedSource
from packrat.models.identity import json_sha256
from packrat.models.torchscript import TorchScriptSource
from packrat.models.zoo import ZooSource
from packrat.pool.config import EngineConfig
from packrat.profiler.backend_choice import Candidate, Trial, choose
from packrat.profiler.side_by_side import measure_side_by_side
from packrat.progress import NullProgress, Progress
from packrat.stats import SamplingPolicy
from packrat.topology import Topology, machine_info, runs_bf16_natively

logger = logging.getLogger(__name__)

AUTO = "auto"

PROBE_POLICY = SamplingPolicy(warmup_runs=1, min_runs=2, max_runs=10, rel_ci=0.1, max_time_s=2.0)
"""Enough runs to rank candidates that differ by 10% or more (the contenders' margin), not a
profile: timed side by side in two passes, a cell's run of seconds once in each (after one
warm-up), a shorter one until +-14% or a second per pass."""

RUNTIMES = ("onnxruntime", "openvino")

CONVERTIBLE = (ZooSource, TorchScriptSource, ExportedSource)
"""Sources served by torch from a graph and weights: what `packrat.models.convert` converts."""


@dataclass(frozen=True)
class Selection:
    """What a model is served on, and why.

    source: the source to serve (the original for torch, else the converted one).
    candidate: its backend and precision.
    reason: in words, for the log and describe.
    accuracy: per candidate compared with the reference (its name, e.g. "openvino bf16"),
        the comparison's numbers and a summary line (`accuracy_json`).
    verdicts: what became of each candidate (its name: "chosen", "1.35x slower", why it
        could not serve, ...); empty when only one was possible.
    contenders: the candidates worth a full profile each (`Choice.contenders`), with their
        sources, `candidate` first; none, or `candidate` alone, when no other comes close.
        With several, `profiler.backend_plan` serves one of them, or a mix.
    mix: for a mix of backends, the candidates mixed (`candidate` is then the probe choice);
        `cells` says which runs each cell (`backend_mix.describe_owners`).
    chunks: where instances run batches in chunks, the chunk size by threads and batches
        (`profiler.backend_plan.with_chunks`).
    """

    source: ModelSource
    candidate: Candidate
    reason: str
    accuracy: dict[str, dict[str, Any]] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    contenders: dict[Candidate, ModelSource] = field(default_factory=dict)
    mix: tuple[Candidate, ...] = ()
    cells: dict[str, list[str]] = field(default_factory=dict)
    chunks: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """JSON-ready, for the management API's describe (and the cached choice)."""
        served = self.mix or (self.candidate,)
        found: dict[str, object] = {  # a mix as "onnxruntime+openvino", "fp32"
            "backend": "+".join(dict.fromkeys(c.backend for c in served)),
            "precision": "+".join(dict.fromkeys(c.precision for c in served)),
            "reason": self.reason,
            "accuracy": {name: dict(found) for name, found in self.accuracy.items()},
            "candidates": dict(self.verdicts),
        }
        if len(self.contenders) > 1:
            found["contenders"] = [str(c) for c in self.contenders]
        if self.cells:
            found["backends_by_threads"] = dict(self.cells)
        if self.chunks:
            found["chunks_by_threads"] = dict(self.chunks)
        return found


def candidates(backend: str, precision: str, *, bf16_native: bool) -> list[Candidate]:
    """The candidates `--backend backend --precision precision` allow, torch fp32 first.

    precision "auto" takes bf16 only where the CPU computes it natively; "bf16" asks for it
    anyway (it must still pass the error budget, and fails to load where OpenVINO would
    compute f32 instead); "fp32" never. Raises PackratError for an
    unknown backend or precision."""
    backends = [b.value for b in Backend]
    if backend != AUTO and backend not in backends:
        raise PackratError(f"unknown backend '{backend}': choose auto, {', '.join(backends)}")
    precisions = [p.value for p in Precision]
    if precision != AUTO and precision not in precisions:
        raise PackratError(f"unknown precision '{precision}': choose auto, {', '.join(precisions)}")
    lossy = precision == Precision.BF16.value or (precision == AUTO and bf16_native)
    found = [Candidate(Backend.TORCH.value)]
    found += [Candidate(Backend.ONNXRUNTIME.value), Candidate(Backend.OPENVINO.value)]
    if lossy:
        found.append(Candidate(Backend.OPENVINO.value, Precision.BF16.value))
    if precision == Precision.BF16.value:
        found = [c for c in found if c.lossy]
    if backend != AUTO:
        found = [c for c in found if c.backend == backend]
    if not found:
        raise PackratError(f"the {backend} backend has no {precision} kernels")
    return found


def probe_cells(cores: int, max_batch: int) -> list[tuple[int, int]]:
    """Every core on batches of 1 and `max_batch`, one core on its share of `max_batch`."""
    return sorted({(cores, 1), (cores, max_batch), (1, max(1, math.ceil(max_batch / cores)))})


def select_backend(
    source: ModelSource,
    backend: str,
    precision: str,
    topology: Topology,
    max_batch: int,
    *,
    engine_config: EngineConfig | None = None,
    progress: Progress | None = None,
) -> Selection:
    """Choose what `source` is served on (see the module docstring). Blocking: converts,
    loads the model in this process for the accuracy check, and starts workers to time it.

    Raises PackratError when no candidate can serve the model, with every reason."""
    progress = progress or NullProgress()
    if not isinstance(source, CONVERTIBLE):
        return _unconvertible(source, backend, precision)
    bf16_native = runs_bf16_natively()
    wanted = candidates(backend, precision, bf16_native=bf16_native)
    lossy_why_not = "" if bf16_native else "this CPU has no native bf16"
    if precision == Precision.FP32.value:
        lossy_why_not = "--precision fp32"
    saved_at = None  # only a choice among several is timed, and so cached
    if len(wanted) > 1:
        saved_at = _saved_path(source, backend, precision, topology, max_batch)
        saved = _saved(saved_at, source)
        if saved is not None:
            return saved
    sources: dict[Candidate, ModelSource] = {}
    trials: dict[Candidate, Trial] = {}
    accuracy: dict[str, dict[str, Any]] = {}
    cells = probe_cells(topology.num_cores, max_batch)
    failed_to_run: list[str] = []
    progress.start(2 * len(wanted), f"{source.name}: choosing among {len(wanted)} backends")
    for candidate in wanted:
        progress.advance(1, f"{source.name}: converting for {candidate} (cached after once)")
        try:
            sources[candidate] = _prepare(source, candidate)
        except PackratError as exc:
            trials[candidate] = Trial(candidate, error=str(exc))
    reference = Candidate(Backend.TORCH.value)
    compared = [c for c in sources if c != reference]
    if compared:
        reports = _compare(source, {c: sources[c] for c in compared})
        for candidate, report in reports.items():
            if isinstance(report, str):
                trials[candidate] = Trial(candidate, error=f"accuracy check failed: {report}")
                sources.pop(candidate)
                continue
            budget = DEFAULT_BUDGET if candidate.lossy else EXACT_BUDGET
            accuracy[str(candidate)] = accuracy_json(report, budget)
            if not candidate.lossy and not report.within(budget):
                trials[candidate] = Trial(
                    candidate, error=f"does not match the fp32 reference: {report.summary()}"
                )
                sources.pop(candidate)
            else:
                trials[candidate] = Trial(
                    candidate, accurate=report.within(budget), accuracy=report.summary()
                )
    if len(wanted) == 1:
        return _only(wanted[0], sources, trials, accuracy)
    usable = [c for c in sources if trials.get(c, Trial(c)).accurate is not False]
    if len(usable) == 1:  # nothing to time it against
        (only,) = usable
        verdicts = {str(c): t.error or t.accuracy for c, t in trials.items() if c != only}
        reason = f"{only}: the only candidate that can serve"
        return Selection(sources[only], only, reason, accuracy, {str(only): "chosen", **verdicts})
    timed = {c: sources[c] for c in usable}
    doing = f"{source.name}: timing {len(timed)} backends side by side on {len(cells)} cells"
    if len(timed) < len(sources):  # outside the budget: not worth timing
        progress.advance(len(sources) - len(timed), doing)
    found = measure_side_by_side(
        timed, cells, PROBE_POLICY, topology=topology, engine_config=engine_config,
        timed=lambda candidate, share: progress.advance(share, f"{doing}: {candidate} timed"),
    )  # fmt: skip
    for candidate, error in found.failed.items():
        trials[candidate] = Trial(candidate, error=f"failed to run: {error}")
        failed_to_run.append(str(candidate))
    for candidate, stats in found.stats.items():
        known = trials.get(candidate, Trial(candidate))
        latency = {cell: s.mean_ms for cell, s in stats.items()}
        trials[candidate] = Trial(
            candidate, latency, accurate=known.accurate, accuracy=known.accuracy
        )
    choice = choose(
        [trials.get(c, Trial(c, error="not prepared")) for c in wanted],
        lossy_allowed=lossy_why_not == "" or precision == Precision.BF16.value,
        lossy_why_not=lossy_why_not,
    )
    logger.info("%s: serving on %s", source.name, choice.reason)
    verdicts = {str(c): verdict for c, verdict in choice.verdicts.items()}
    contenders = {c: sources[c] for c in choice.contenders}
    selection = Selection(
        sources[choice.chosen], choice.chosen, choice.reason, accuracy, verdicts, contenders
    )
    assert saved_at is not None  # several candidates were wanted
    if failed_to_run:
        logger.warning(
            "%s: not caching the backend choice: %s failed to run; the next start times %s again",
            source.name,
            " and ".join(failed_to_run),
            "it" if len(failed_to_run) == 1 else "them",
        )
    else:
        _save(saved_at, selection)
    return selection


def _saved_path(
    source: ModelSource, backend: str, precision: str, topology: Topology, max_batch: int
) -> Path:
    """Where the choice for these options is cached."""
    key = json_sha256(
        {
            "model": source.identity().content_hash,
            "options": [backend, precision, max_batch],
            "cores": topology.cpu_ids(),
            "cpu": machine_info(topology).cpu_model,
            "versions": {p: library_version(p) for p in ("torch", *RUNTIMES)},
            # 2: with the contenders; 4: a torch choice has them too; 5: timed side by side
            "format": 5,
        }
    )
    return cache_dir() / "backends" / f"{source.name}-{key[:16]}.json"


def _saved(path: Path, source: ModelSource) -> Selection | None:
    """The cached choice, its candidate prepared again (a cached conversion); None if there
    is none or it cannot be used."""
    try:
        raw = json.loads(path.read_text())
        candidate = Candidate(raw["backend"], raw["precision"])
        prepared = _prepare(source, candidate)
        contenders = [Candidate.parse(text) for text in raw.get("contenders", [])]
        others = {c: _prepare(source, c) for c in contenders if c != candidate}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, PackratError) as exc:
        logger.warning("ignoring the cached backend choice %s: %s", path, exc)
        return None
    reason = f"{raw['reason']} (chosen at an earlier start: {path})"
    logger.info("%s: serving on %s", source.name, reason)
    contending = {candidate: prepared, **others}
    return Selection(prepared, candidate, reason, raw["accuracy"], raw["candidates"], contending)


def _save(path: Path, selection: Selection) -> None:
    """Cache `selection` (written whole or not at all)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(selection.to_json(), indent=1))
        temporary.replace(path)
    except OSError as exc:
        logger.warning("could not cache the backend choice in %s: %s", path, exc)


def _only(
    candidate: Candidate,
    sources: dict[Candidate, ModelSource],
    trials: dict[Candidate, Trial],
    accuracy: dict[str, dict[str, Any]],
) -> Selection:
    """The one candidate asked for, if it can serve (nothing to time against)."""
    trial = trials.get(candidate, Trial(candidate))
    if candidate not in sources:
        raise PackratError(f"cannot serve on {candidate}: {trial.error}")
    if trial.accurate is False:
        raise PackratError(f"{candidate} is outside the error budget: {trial.accuracy}")
    return Selection(sources[candidate], candidate, f"{candidate}: as asked", accuracy)


def accuracy_json(report: AccuracyReport, budget: AccuracyBudget) -> dict[str, Any]:
    """A comparison with the reference, JSON-ready: its numbers, the budget it was held to,
    whether it is within, and the summary line."""
    return {
        "rows": report.rows,
        "min_cosine": report.min_cosine,
        "max_abs_error": report.max_abs_error,
        "top1_agreement": report.top1_agreement,
        "budget": {
            "min_cosine": budget.min_cosine,
            "min_top1_agreement": budget.min_top1_agreement,
        },
        "within_budget": report.within(budget),
        "summary": report.summary(),
    }


def _unconvertible(source: ModelSource, backend: str, precision: str) -> Selection:
    """A source whose format names its backend (handler file, .onnx, OpenVINO IR)."""
    own_backend = getattr(source, "backend", Backend.TORCH)
    own_precision = getattr(source, "precision", Precision.FP32)
    own = Candidate(own_backend.value, own_precision.value)
    if backend not in (AUTO, own.backend):
        raise PackratError(
            f"model '{source.name}' is served by {own.backend} (its format); "
            f"--backend {backend} cannot convert it"
        )
    if precision not in (AUTO, own.precision):
        raise PackratError(f"model '{source.name}' runs in {own.precision}, not {precision}")
    return Selection(source, own, f"{own}: the model's format")


def _prepare(source: ModelSource, candidate: Candidate) -> ModelSource:
    """The source that runs `candidate`: the original for torch, else its conversion."""
    if candidate.backend == Backend.TORCH.value:
        return source
    from packrat.models.convert import convert_source  # imports torch and the exporter

    return convert_source(source, Backend(candidate.backend), Precision(candidate.precision))


def _compare(
    source: ModelSource, converted: dict[Candidate, ModelSource]
) -> dict[Candidate, AccuracyReport | str]:
    """Each converted candidate's outputs against torch's fp32 ones, in this process (a
    message instead of a report where a candidate fails to load or run)."""
    reference = source.load()
    reference.initialize()
    reports: dict[Candidate, AccuracyReport | str] = {}
    for candidate, candidate_source in converted.items():
        try:
            handler = candidate_source.load()
            handler.initialize()
            reports[candidate] = check_accuracy(reference, handler)
        except ModelError as exc:
            reports[candidate] = str(exc)
    return reports
