"""Choosing a backend and precision: the fastest candidate that ran and is accurate enough."""

from __future__ import annotations

import pytest

from packrat.errors import PackratError
from packrat.profiler.backend_choice import Candidate, Trial, choose, mixable
from packrat.topology import cpu_flags, runs_bf16_natively

TORCH = Candidate("torch")
ORT = Candidate("onnxruntime")
OV = Candidate("openvino")
OV_BF16 = Candidate("openvino", "bf16")
CELLS = ((1, 1), (2, 8))


def timed(candidate: Candidate, *ms: float, **kwargs: object) -> Trial:
    return Trial(candidate, dict(zip(CELLS, ms, strict=True)), **kwargs)  # type: ignore[arg-type]


def test_the_fastest_exact_candidate_wins_and_the_reason_says_by_how_much() -> None:
    choice = choose(
        [timed(TORCH, 40.0, 320.0), timed(ORT, 20.0, 160.0), timed(OV, 25.0, 150.0)],
        lossy_allowed=False,
    )
    assert choice.chosen == ORT
    assert "2.00x faster than torch fp32" in choice.reason
    assert choice.verdicts[TORCH] == "2.00x slower"
    assert choice.verdicts[ORT] == "chosen"
    # geometric means: ORT sqrt(20 * 160) = 56.6, OV sqrt(25 * 150) = 61.2
    assert choice.verdicts[OV] == "1.08x slower"


def test_a_lossy_candidate_wins_only_when_allowed_and_within_budget() -> None:
    bf16 = timed(OV_BF16, 10.0, 80.0, accurate=True, accuracy="cosine 0.9998, top-1 100%")
    trials = [timed(TORCH, 40.0, 320.0), timed(OV, 25.0, 150.0), bf16]
    allowed = choose(trials, lossy_allowed=True)
    assert allowed.chosen == OV_BF16
    assert allowed.reason.endswith("cosine 0.9998, top-1 100%")
    refused = choose(trials, lossy_allowed=False, lossy_why_not="--precision fp32")
    assert refused.chosen == OV
    assert refused.verdicts[OV_BF16] == "lossy, not allowed: --precision fp32"


def test_a_lossy_candidate_outside_the_budget_or_not_compared_is_passed_over() -> None:
    wrong = timed(OV_BF16, 5.0, 40.0, accurate=False, accuracy="cosine 0.91 < 0.999")
    unchecked = timed(Candidate("torch", "bf16"), 5.0, 40.0)
    choice = choose([timed(TORCH, 40.0, 320.0), wrong, unchecked], lossy_allowed=True)
    assert choice.chosen == TORCH
    assert choice.verdicts[OV_BF16] == "outside the error budget (cosine 0.91 < 0.999)"
    assert choice.verdicts[Candidate("torch", "bf16")] == "not compared with the fp32 reference"


def test_failed_candidates_are_passed_over_and_none_left_is_an_error_with_every_reason() -> None:
    missing = Trial(ORT, error="onnxruntime is not installed")
    assert choose([timed(TORCH, 40.0, 320.0), missing], lossy_allowed=True).chosen == TORCH
    with pytest.raises(PackratError, match="onnxruntime fp32: unavailable: onnxruntime is not"):
        choose([missing, Trial(OV, error="conversion failed")], lossy_allowed=True)


def test_only_the_cells_every_candidate_was_timed_on_are_compared() -> None:
    partial = Trial(ORT, {(1, 1): 30.0})  # faster on (2, 8) would not count: not timed there
    choice = choose([timed(TORCH, 40.0, 10.0), partial], lossy_allowed=False)
    assert choice.chosen == ORT  # on (1, 1) alone: 30 < 40
    assert "1 threads x batch 1" in choice.reason and "batch 8" not in choice.reason


def test_bf16_is_native_only_with_avx512_bf16_or_amx(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with_bf16 = tmp_path / "with"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "without"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert "avx512_vnni" in cpu_flags(with_bf16)
    assert runs_bf16_natively(with_bf16)
    assert not runs_bf16_natively(without)
    assert not runs_bf16_natively(tmp_path / "missing")


def test_contenders_are_the_runtimes_fast_on_some_cell_the_chosen_first() -> None:
    # ORT wins overall and on (1, 1); OV is fastest on (2, 8); OV bf16 is 10% or more
    # slower than the fastest on every cell; torch is 22.5 on (1, 1), over 10% slower.
    bf16 = timed(OV_BF16, 22.1, 166.0, accurate=True, accuracy="cosine 0.9998")
    trials = [timed(TORCH, 22.5, 320.0), timed(ORT, 20.0, 160.0), timed(OV, 25.0, 150.0), bf16]
    choice = choose(trials, lossy_allowed=True)
    assert choice.chosen == ORT
    assert choice.contenders == (ORT, OV)
    # Within 10% of the fastest on one cell is enough.
    close = choose(trials[:3] + [timed(OV_BF16, 21.9, 400.0, accurate=True)], lossy_allowed=True)
    assert close.contenders == (ORT, OV_BF16, OV)  # the others by name
    # Not allowed, not a contender.
    assert choose(trials, lossy_allowed=False).contenders == (ORT, OV)
    # torch close on a cell is not one: only a runtime the probes chose has contenders.
    near = choose([timed(TORCH, 21.0, 320.0), *trials[1:3]], lossy_allowed=False)
    assert near.contenders == (ORT, OV)
    assert not mixable(TORCH) and mixable(ORT) and mixable(OV_BF16)


def test_a_torch_choice_keeps_the_runtimes_fast_on_some_cell() -> None:
    # As gpt2 on the AMD machine: torch wins the geometric mean by 2% and is far slower at
    # batch 1; the plans must get to see ONNX Runtime's profile.
    choice = choose([timed(TORCH, 218.0, 100.0), timed(ORT, 162.0, 139.0)], lossy_allowed=False)
    assert choice.chosen == TORCH and choice.verdicts[ORT] == "1.02x slower"
    assert choice.contenders == (TORCH, ORT)
    far = choose([timed(TORCH, 10.0, 100.0), timed(ORT, 11.5, 115.0)], lossy_allowed=False)
    assert far.contenders == (TORCH,)


def test_a_candidate_parses_back_from_its_name() -> None:
    assert Candidate.parse(str(OV_BF16)) == OV_BF16
    with pytest.raises(ValueError, match="not a backend and a precision"):
        Candidate.parse("openvino")
