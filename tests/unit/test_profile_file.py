"""Profile files: JSON round trip, validation, and the published CSV reader."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from packrat.errors import ProfileError
from packrat.profiler.cache import cached_profile
from packrat.profiler.profile_file import (
    METHOD,
    Profile,
    ProfileKind,
    load_profile,
    outdated,
    read_published_csv,
    save_profile,
)
from packrat.stats import CellStats

PAPER = Path(__file__).resolve().parents[1] / "fixtures" / "paper-profiles"


def test_json_round_trip(tmp_path: Path) -> None:
    prof = Profile(
        model_name="m",
        content_hash="sha256:ab",
        machine={"cpu_model": "X", "usable_cores": 2},
        torch_version="2.13.0",
        cells={(1, 2): CellStats(10.0, 9.5, 12.0, 1.0, 7), (2, 2): CellStats(6.0, 6, 7, 0.5, 5)},
        sampling={"rel_ci": 0.03},
    )
    path = tmp_path / "p.json"
    save_profile(prof, path)
    data = json.loads(path.read_text())
    assert data["format"] == "packrat-profile" and data["version"] == 1
    assert data["cells"][0] == {
        "threads": 1,
        "batch": 2,
        "mean_ms": 10.0,
        "p50_ms": 9.5,
        "p95_ms": 12.0,
        "stdev_ms": 1.0,
        "n": 7,
    }
    back = load_profile(path)
    assert back.cells == prof.cells
    assert back.latency_table().get(2, 2) == 6.0
    assert (back.model_name, back.content_hash, back.torch_version) == ("m", "sha256:ab", "2.13.0")


def test_a_cell_measured_in_passes_keeps_them(tmp_path: Path) -> None:
    cell = CellStats(10.0, 10.0, 11.0, 1.0, 4).with_pass(CellStats(14.0, 14.0, 15.0, 1.0, 4))
    cell = cell.with_pass(CellStats(11.0, 11.0, 12.0, 1.0, 4))
    path = tmp_path / "p.json"
    save_profile(Profile("m", "h", {}, "t", {(1, 1): cell, (2, 1): CellStats(6, 6, 6, 0, 2)}), path)
    data = json.loads(path.read_text())
    assert [p["mean_ms"] for p in data["cells"][0]["passes"]] == [10.0, 14.0, 11.0]
    assert data["cells"][0]["mean_ms"] == 11.0 and "passes" not in data["cells"][1]
    back = load_profile(path)
    assert back.cells[1, 1] == cell and back.cells[1, 1].pass_count == 3
    data["cells"][0]["passes"][1]["n"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="cell 0 is invalid"):
        load_profile(path)


def test_the_kind_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    cells = {(1, 1): CellStats(1, 1, 1, 0, 1)}
    save_profile(Profile("m", "h", {}, "t", cells, kind=ProfileKind.CONTENTION), path)
    data = json.loads(path.read_text())
    assert data["kind"] == "contention"
    assert load_profile(path).kind is ProfileKind.CONTENTION
    del data["kind"]
    path.write_text(json.dumps(data))
    assert load_profile(path).kind is ProfileKind.ISOLATED  # files before kinds were
    data["kind"] = "mixed"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="profile kind must be one of .*got 'mixed'"):
        load_profile(path)


def test_the_measuring_method_is_kept_and_an_older_one_is_measured_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "p.json"
    save_profile(Profile("m", "h", {}, "t", {(1, 1): CellStats(1, 1, 1, 0, 1)}), path)
    data = json.loads(path.read_text())
    assert data["method"] == METHOD >= 2
    current = load_profile(path)
    assert current.method == METHOD and outdated(current) is None
    assert cached_profile(path) == current, "a current cached profile is planned with"

    del data["method"]  # as Packrat wrote files before it had one
    path.write_text(json.dumps(data))
    old = load_profile(path)
    why = outdated(old)
    assert old.method == 1 and why is not None
    assert f"method 1, now {METHOD}" in why and "measured again while other processes" in why
    with caplog.at_level(logging.WARNING):
        assert cached_profile(path) is None, "an outdated cached profile is measured afresh"
    assert f"ignoring the cached profile {path}: an older Packrat" in caplog.text
    assert outdated(replace(old, source="published:c6420/bert_latency.csv")) is None

    path.write_text("{")
    with caplog.at_level(logging.WARNING):
        assert cached_profile(path) is None
    assert "ignoring unreadable cached profile" in caplog.text
    assert cached_profile(tmp_path / "absent.json") is None


def test_invalid_cell_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    save_profile(Profile("m", "h", {}, "t", {(1, 1): CellStats(1, 1, 1, 0, 1)}), path)
    data = json.loads(path.read_text())
    data["cells"][0]["mean_ms"] = -1
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="cell 0 is invalid"):
        load_profile(path)


def test_csv_that_is_not_a_profile(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ProfileError, match="not a published profile CSV"):
        load_profile(path)


def test_published_csv_keeps_script_sequential_rows() -> None:
    prof = read_published_csv(PAPER / "cloudlab-c6420" / "bert_latency.csv")
    assert prof.model_name == "bert"
    assert len(prof.cells) == 16 * 11  # t = 1..16, b = 1..1024 in powers of two
    assert prof.max_threads == 16
    # The script/sequential row, not the eager or interleaved ones.
    rows = (PAPER / "cloudlab-c6420" / "bert_latency.csv").read_text().splitlines()
    row = next(
        r for r in rows if r.startswith("bert_manual_script,sequential") and ",1,1,16,8," in r
    )
    assert prof.cells[(16, 8)].mean_ms == pytest.approx(float(row.split(",")[10]))
    eager = read_published_csv(PAPER / "cloudlab-c6420" / "bert_latency.csv", mode="eager")
    assert eager.cells[(16, 8)].mean_ms != prof.cells[(16, 8)].mean_ms


def test_multi_instance_csv_is_refused() -> None:
    with pytest.raises(ProfileError):
        read_published_csv(PAPER / "multiinstance" / "bert_latency.csv")


def test_resume_refuses_other_model_machine_torch_or_engine() -> None:
    from packrat.errors import ProfileError as Refused
    from packrat.profiler.profile_file import check_resumable

    base = Profile(
        "m", "sha256:aa", {"cpu_model": "X"}, "2.13.0", engine={"keep_freed_memory": True}
    )
    check_resumable(base, base, "p.json")
    for other, what in (
        (
            Profile("m", "sha256:bb", {"cpu_model": "X"}, "2.13.0", engine=base.engine),
            "another model",
        ),
        (Profile("m", "sha256:aa", {"cpu_model": "Y"}, "2.13.0", engine=base.engine), "CPU"),
        (Profile("m", "sha256:aa", {"cpu_model": "X"}, "2.14.0", engine=base.engine), "torch"),
        (
            Profile(
                "m", "sha256:aa", {"cpu_model": "X"}, "2.13.0", engine={"keep_freed_memory": False}
            ),
            "engine",
        ),
        (replace(base, method=1), "measuring method .*packrat profile --fresh"),
    ):
        with pytest.raises(Refused, match=what):
            check_resumable(base, other, "p.json")
