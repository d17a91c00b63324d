"""benchmarks/backends_side_by_side.py's comparison: Packrat against the one single-process
configuration that is fastest, picked on rounds it is not scored on, paired by round, and
over every batch size."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # as `python benchmarks/X.py` sees the harness
from harness.backends.report import ModelRun, by_chance, overall_text, verdict  # noqa: E402


def _run(medians: dict[str, dict[int, list[float]]]) -> ModelRun:
    batches = sorted(medians["packrat"])
    return ModelRun(
        model="resnet50",
        served="onnxruntime fp32",
        reason="",
        profile="",
        batches=batches,
        plans={b: "<2,1,1>" for b in batches},
        predicted_ms={b: 1.0 for b in batches},
        unavailable={},
        medians=medians,
    )


def test_the_best_single_process_system_is_one_configuration_not_each_rounds_luckiest() -> None:
    # ort-default is fastest over the rounds (median 100); ov-latency is slower (median 110)
    # but was the luckiest in round 2. Each round's least value would give 100, 90, 100.
    run = _run(
        {
            "packrat": {8: [100.0, 100.0, 100.0]},
            "ort-default": {8: [100.0, 100.0, 101.0]},
            "ov-latency": {8: [110.0, 90.0, 120.0]},
        }
    )
    assert run.fastest(8, ["ort-default", "ov-latency"]) == "ort-default"
    assert run.best_single(8) == [100.0, 100.0, 101.0]
    ratio = run.ratio(8)
    assert ratio.values == (1.0, 1.0, 1.01) and ratio.median == 1.0
    assert verdict(ratio) == "yes"


def test_the_best_single_process_system_of_a_round_is_picked_on_the_other_rounds() -> None:
    # ov-latency is fastest over all three rounds (median 100 against 101) only by its luck
    # in round 1 (80); scored on round 1, it is picked on rounds 2 and 3, where ort-default
    # is faster. Picked and scored on the same rounds, round 1 would read 0.80.
    run = _run(
        {
            "packrat": {8: [100.0, 100.0, 100.0]},
            "ov-latency": {8: [80.0, 100.0, 104.0]},
            "ort-default": {8: [101.0, 101.0, 101.0]},
        }
    )
    assert run.fastest(8, ["ort-default", "ov-latency"]) == "ov-latency"
    assert run.fastest(8, ["ort-default", "ov-latency"], [1, 2]) == "ort-default"
    assert run.best_single(8) == [101.0, 100.0, 104.0]
    assert run.ratio(8).median == pytest.approx(1.01)
    held = (0.80 * 1.00 * 1.04) ** (1 / 3)  # ov-latency held fixed: scored on every round
    assert run.overall("ov-latency").values == pytest.approx((held,))


def test_over_every_batch_size_the_geometric_mean_of_each_sizes_rounds() -> None:
    run = _run(
        {
            "packrat": {1: [10.0, 10.0], 2: [20.0, 20.0], 4: [40.0, 40.0]},
            # ratios per round: 1: 1.0 and 1.0; 2: 0.5 and 2.0 (geometric mean 1); 4: 2 and 2
            "ort-default": {1: [10.0, 10.0], 2: [10.0, 40.0], 4: [80.0, 80.0]},
        }
    )
    overall = run.overall()
    assert overall.values == pytest.approx((1.0, 1.0, 2.0))
    assert overall.median == pytest.approx(1.0)
    assert overall.low < 2 ** (1 / 3) < overall.high  # around the geometric mean of 1, 1, 2
    assert run.overall("ort-default").values == overall.values  # the only system, held fixed
    text = overall_text(overall)  # both: the median of a few misses may lie outside the CI
    assert text.startswith(f"geometric mean {2 ** (1 / 3):.3f} [") and text.endswith("median 1.000")


def test_a_batch_size_no_single_process_system_ran_has_no_ratio() -> None:
    run = _run({"packrat": {1: [10.0, 11.0]}, "ort-default": {1: [math.nan, math.nan]}})
    assert run.best_single(1) == [math.nan, math.nan]
    assert verdict(run.ratio(1)) == "-"
    assert math.isnan(run.overall().median)


def test_the_sizes_worse_by_chance_alone_match_a_simulation_of_parity() -> None:
    # 64 batch sizes, each "worse beyond its CI" with probability 2.5% at parity: the
    # returned count is the one that 95% of simulated runs stay within, and one fewer is not.
    expected, most = by_chance(64)
    assert expected == pytest.approx(1.6)
    rng = random.Random(15)
    counts = [sum(rng.random() < 0.025 for _ in range(64)) for _ in range(20_000)]
    assert sum(c <= most for c in counts) / len(counts) >= 0.94
    assert sum(c <= most - 1 for c in counts) / len(counts) < 0.95
    assert by_chance(1) == (0.025, 0)
