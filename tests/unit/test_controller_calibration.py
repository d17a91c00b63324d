"""The profile checked against served sub-batches (`packrat.controller.calibration`)."""

from __future__ import annotations

import pytest

from packrat.controller.calibration import Calibration, CalibrationConfig, Correction
from packrat.optimizer.table import LatencyTable

TABLE = LatencyTable.from_cells({(1, 1): 40.0, (1, 2): 75.0, (2, 1): 25.0, (2, 2): 45.0})


def served(calibration: Calibration, times: int, *cells: tuple[int, int, float]) -> list[object]:
    """`times` batches, each running every (threads, batch, ms) cell given once."""
    made: list[object] = []
    for _ in range(times):
        threads, sizes, seconds = zip(*((t, b, ms / 1000.0) for t, b, ms in cells), strict=True)
        made += calibration.observe(threads, sizes, seconds)
    return made


def test_a_cell_served_slower_than_profiled_is_corrected_to_the_served_median() -> None:
    calibration = Calibration(TABLE, CalibrationConfig(samples=4))
    assert served(calibration, 2, (1, 1, 70.0)) + served(calibration, 1, (1, 1, 58.0)) == []
    assert calibration.table is TABLE  # the window is not full yet
    (correction,) = served(calibration, 1, (1, 1, 60.0))
    assert correction == Correction(1, 1, 40.0, 65.0, 4)  # the median of 70, 70, 58, 60
    assert calibration.table.get(1, 1) == 65.0
    assert calibration.table.get(2, 1) == 25.0  # the other cells stay as profiled
    assert calibration.corrections == [correction]
    assert TABLE.get(1, 1) == 40.0  # the table it started from is not changed


def test_a_cell_served_faster_is_corrected_too() -> None:
    calibration = Calibration(TABLE, CalibrationConfig(samples=4))
    (correction,) = served(calibration, 4, (2, 2, 30.0))
    assert (correction.threads, correction.batch, correction.served_ms) == (2, 2, 30.0)
    assert correction.ratio == pytest.approx(30.0 / 45.0)


def test_noise_within_the_tolerance_or_the_floor_corrects_nothing() -> None:
    calibration = Calibration(TABLE, CalibrationConfig(samples=4, tolerance=0.3, floor_ms=1.0))
    assert served(calibration, 10, (1, 1, 51.0), (2, 2, 36.0)) == []  # 1.28x, 0.8x
    small = Calibration(LatencyTable.from_cells({(1, 1): 0.5}), CalibrationConfig(samples=2))
    assert served(small, 5, (1, 1, 1.2)) == []  # 2.4x, but 0.7 ms: below the floor


def test_one_slow_batch_does_not_move_the_median() -> None:
    calibration = Calibration(TABLE, CalibrationConfig(samples=5))
    assert served(calibration, 4, (1, 1, 41.0)) == []
    assert served(calibration, 1, (1, 1, 400.0)) == []
    assert calibration.table is TABLE


def test_a_corrected_cell_is_judged_again_from_a_fresh_window() -> None:
    calibration = Calibration(TABLE, CalibrationConfig(samples=3))
    first = served(calibration, 3, (1, 1, 80.0))
    assert len(first) == 1
    assert served(calibration, 2, (1, 1, 80.0)) == []  # at the corrected value, and 2 < 3
    second = served(calibration, 3, (1, 1, 40.0))
    assert [c.profiled_ms for c in second] == [80.0]  # against the corrected value
    assert calibration.table.get(1, 1) == 40.0
    assert len(calibration.corrections) == 2


def test_idle_failed_and_unprofiled_sub_batches_are_skipped() -> None:
    calibration = Calibration(TABLE, CalibrationConfig(samples=1))
    assert calibration.observe([1, 1], [0, 2], [0.0, 0.075]) == []  # idle; as profiled
    assert calibration.observe([1, 2], [1, 1], [0.0, 0.025]) == []  # failed; as profiled
    assert calibration.observe([1], [3], [0.5]) == []  # no cell for batch 3
    with pytest.raises(ValueError):
        calibration.observe([1, 2], [1], [0.04])  # one size short


@pytest.mark.parametrize(
    "settings",
    [{"samples": 0}, {"samples": True}, {"tolerance": 0.0}, {"floor_ms": -1.0}],
)
def test_bad_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="CalibrationConfig"):
        CalibrationConfig(**settings)  # type: ignore[arg-type]


def test_with_cells_sets_cells_and_refuses_cells_outside_the_table() -> None:
    table = TABLE.with_cells({(2, 1): 30.0})
    assert (table.get(2, 1), table.get(1, 1)) == (30.0, 40.0)
    with pytest.raises(KeyError, match="3 threads"):
        TABLE.with_cells({(3, 1): 10.0})
