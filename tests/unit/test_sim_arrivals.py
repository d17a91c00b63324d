"""The simulator's loads: the load generator's arrival times, traces, bursts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packrat.bench.loadgen import RequestRecord, poisson, steps, write_csv
from packrat.errors import PackratError
from packrat.sim import SIM_BOUNDS, bursts, poisson_load, stepped, trace


def test_poisson_and_steps_are_the_load_generators_arrivals_for_the_same_seed() -> None:
    # benchmarks/simulate_validate.py relies on it: loadgen and simulator see the same times
    assert np.array_equal(
        poisson_load(5.0, 30.0, seed=7).arrivals_s, poisson(5.0, 30.0, 7).arrivals_s
    )
    mine = stepped("2:10,7:10,2:10", seed=3)
    theirs = steps([(2, 10), (7, 10), (2, 10)], seed=3)
    assert np.array_equal(mine.arrivals_s, theirs.arrivals_s)
    assert [p.name for p in mine.phases] == [p.name for p in theirs.phases]


def test_simulations_may_run_longer_than_a_load_generator_run() -> None:
    day = poisson_load(0.01, 24 * 3600.0, seed=0)  # loadgen refuses more than an hour
    assert day.duration_s == 24 * 3600.0
    assert SIM_BOUNDS.max_duration_s > 3600.0


def test_trace_files_of_seconds_and_loadgen_csvs(tmp_path: Path) -> None:
    plain = tmp_path / "times.txt"
    plain.write_text("# arrivals\n0.5\n0.1\n\n2.25\n")
    assert trace(plain).arrivals_s.tolist() == [0.1, 0.5, 2.25]
    records = [
        RequestRecord("p", scheduled_s=t, sent_s=t, done_s=t + 0.2, status=200)
        for t in (0.0, 0.3, 1.7)
    ]
    csv_path = tmp_path / "load.csv"
    write_csv(records, csv_path)
    assert trace(csv_path).arrivals_s.tolist() == [0.0, 0.3, 1.7]
    with pytest.raises(PackratError, match="cannot read trace"):
        trace(tmp_path / "missing.txt")


def test_bursts_arrive_together_one_period_apart() -> None:
    load = bursts(size=3, count=2, period_s=5.0)
    assert load.arrivals_s.tolist() == [0.0, 0.0, 0.0, 5.0, 5.0, 5.0]
    assert load.duration_s == 10.0
    with pytest.raises(PackratError, match="size >= 1"):
        bursts(size=0, count=1, period_s=1.0)
    with pytest.raises(PackratError, match="period"):
        bursts(size=1, count=1, period_s=0.0)
