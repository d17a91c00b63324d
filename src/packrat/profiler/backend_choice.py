"""Which backend and precision a model's instances run: the fastest that is accurate enough.

Each candidate (a backend and a precision: torch fp32, ONNX Runtime fp32, OpenVINO bf16, ...)
is timed on the same probe cells (threads, batch) and, when lossy, compared with the exact
fp32 reference. `choose` then takes the fastest by the geometric mean of its latencies over
the cells (every cell counts alike, whatever its scale), among the candidates that

- ran at all (a backend that is not installed, or fails on the model, is passed over and the
  reason kept);
- are exact, or lossy within the error budget *and* allowed: a lossy precision is allowed only
  where the CPU computes it natively (bf16 on AVX512_BF16 or AMX: emulated bf16 is slower
  than fp32 anyway) and the user did not ask for exact fp32.

The runtimes (not torch) that come within `CONTENDER_MARGIN` of the fastest on some cell are
the choice's *contenders*, after the chosen candidate: backends fast somewhere, worth a full
profile each, from which the plans decide (`controller.backend_mix`: one of them, or a mix by
cell of those that can share a worker, `mixable`). A torch choice keeps them too: the
probes' geometric mean can favour torch by a few percent while a runtime is far faster on
some cell (on the AMD machine torch won gpt2's probes by 2% once, and ONNX Runtime runs its
batch 1 1.4x faster). torch is not a contender to a runtime the probes chose: the plans would
then weigh a third profile, and profiles of backends a few percent apart are decided by the
machine's drift (docs/benchmarks/backends-gpt2-contenders.md).

The choice carries its reason in words, for the start-up log and the management API's
describe: which candidate, how much faster than the exact torch instance, and why each other
candidate was not taken. Pure: no timing, no backends imported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from packrat.controller.backend_mix import geometric_mean
from packrat.errors import PackratError

EXACT_PRECISION = "fp32"

CONTENDER_MARGIN = 1.10
"""How close to the fastest on some probe cell a candidate must come to be profiled in full:
the probes' own spread (a 10% confidence interval)."""

TORCH = "torch"


@dataclass(frozen=True)
class Candidate:
    """A backend (torch, onnxruntime, openvino) at a precision (fp32, bf16, ...)."""

    backend: str
    precision: str = EXACT_PRECISION

    @property
    def lossy(self) -> bool:
        """Whether it computes in less than fp32 (its answers differ from the reference)."""
        return self.precision != EXACT_PRECISION

    def __str__(self) -> str:
        return f"{self.backend} {self.precision}"

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """The candidate `str` wrote ("openvino bf16"); ValueError if it is not one."""
        backend, _, precision = text.partition(" ")
        if not backend or not precision or " " in precision:
            raise ValueError(f"not a backend and a precision: {text!r}")
        return cls(backend, precision)


@dataclass(frozen=True)
class Trial:
    """What was found about one candidate.

    latency_ms: mean batch latency per probe cell (threads, batch); empty if it failed.
    error: why it could not run (not installed, conversion failed, ...); None if it ran.
    accurate: for a lossy candidate, whether its answers are within the error budget (None:
        not compared, as for an exact one); accuracy: the comparison in words.
    """

    candidate: Candidate
    latency_ms: Mapping[tuple[int, int], float] = field(default_factory=dict)
    error: str | None = None
    accurate: bool | None = None
    accuracy: str = ""


@dataclass(frozen=True)
class Choice:
    """The candidate chosen, why, and every trial with what became of it (`verdicts`).

    contenders: the chosen one first, then the other candidates worth a full profile (see
        the module docstring); only the chosen one where it is torch."""

    chosen: Candidate
    reason: str
    verdicts: Mapping[Candidate, str]
    score_ms: Mapping[Candidate, float]
    contenders: tuple[Candidate, ...] = ()


def choose(trials: Sequence[Trial], *, lossy_allowed: bool, lossy_why_not: str = "") -> Choice:
    """The fastest usable candidate of `trials` (see the module's rules).

    lossy_allowed: whether a lossy precision may be chosen at all (the CPU computes it
        natively and the user did not ask for fp32); `lossy_why_not` says why not, for the
        verdicts. Raises PackratError if no candidate is usable, with every reason.
    """
    cells = _common_cells(trials)
    verdicts: dict[Candidate, str] = {}
    scores: dict[Candidate, float] = {}
    for trial in trials:
        verdict = _unusable(trial, lossy_allowed, lossy_why_not)
        if verdict is None and not cells:
            verdict = "not timed on the cells the others were"
        if verdict is not None:
            verdicts[trial.candidate] = verdict
            continue
        scores[trial.candidate] = geometric_mean([trial.latency_ms[c] for c in cells])
    if not scores:
        reasons = "; ".join(f"{c}: {v}" for c, v in verdicts.items())
        raise PackratError(f"no backend can serve this model ({reasons or 'none was tried'})")
    chosen = min(scores, key=lambda c: (scores[c], c.lossy, c.backend))
    for candidate, score in scores.items():
        if candidate != chosen:
            verdicts[candidate] = f"{score / scores[chosen]:.2f}x slower"
    verdicts[chosen] = "chosen"
    usable = {t.candidate: t.latency_ms for t in trials if t.candidate in scores}
    reason = _reason(chosen, trials, scores, cells)
    return Choice(chosen, reason, verdicts, scores, _contenders(chosen, usable, cells))


def mixable(candidate: Candidate) -> bool:
    """Whether `candidate` can share a worker with other backends: not torch, which computes
    on threads of its own (`models.mixed_source`)."""
    return candidate.backend != TORCH


def _contenders(
    chosen: Candidate,
    latency: Mapping[Candidate, Mapping[tuple[int, int], float]],
    cells: Sequence[tuple[int, int]],
) -> tuple[Candidate, ...]:
    """`chosen`, then the usable runtimes within `CONTENDER_MARGIN` of the fastest on a cell,
    by name."""
    close = {
        candidate
        for cell in cells
        for candidate, found in latency.items()
        if found[cell] <= CONTENDER_MARGIN * min(other[cell] for other in latency.values())
    }
    return (chosen, *sorted((c for c in close if c != chosen and mixable(c)), key=str))


def _unusable(trial: Trial, lossy_allowed: bool, lossy_why_not: str) -> str | None:
    """Why `trial`'s candidate cannot be chosen, or None if it can."""
    if trial.error is not None:
        return f"unavailable: {trial.error}"
    if not trial.latency_ms:
        return "not timed"
    if trial.candidate.lossy:
        if trial.accurate is False:
            return f"outside the error budget ({trial.accuracy})"
        if trial.accurate is None:
            return "not compared with the fp32 reference"
        if not lossy_allowed:
            return f"lossy, not allowed{': ' + lossy_why_not if lossy_why_not else ''}"
    return None


def _common_cells(trials: Sequence[Trial]) -> list[tuple[int, int]]:
    """The cells every timed trial was timed on, in order."""
    timed = [set(t.latency_ms) for t in trials if t.error is None and t.latency_ms]
    return sorted(set.intersection(*timed)) if timed else []


def _reason(
    chosen: Candidate,
    trials: Sequence[Trial],
    scores: Mapping[Candidate, float],
    cells: Sequence[tuple[int, int]],
) -> str:
    where = ", ".join(f"{t} threads x batch {b}" for t, b in cells)
    text = f"{chosen}: the fastest accurate candidate (geometric mean over {where})"
    reference = Candidate(TORCH)
    if chosen != reference and reference in scores:
        text += f", {scores[reference] / scores[chosen]:.2f}x faster than {reference}"
    accuracy = next((t.accuracy for t in trials if t.candidate == chosen and t.accuracy), "")
    return f"{text}; {accuracy}" if accuracy else text
