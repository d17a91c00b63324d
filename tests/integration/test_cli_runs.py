"""`packrat profile` and `packrat bench` as a user runs them, on a tiny zoo model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from packrat.profiler.profile_file import Profile, save_profile
from packrat.stats import CellStats

pytestmark = pytest.mark.slow


def packrat(*args: str, cache: Path, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACKRAT_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "packrat.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )


QUICK = ("--max-time", "0.5", "--max-runs", "10")


def test_profile_writes_resumes_and_extends(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    first = packrat(
        "profile",
        "tiny-resnet",
        "-T",
        "1",
        "--batches",
        "1,2",
        "-o",
        str(out),
        *QUICK,
        cache=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    data = json.loads(out.read_text())
    assert data["format"] == "packrat-profile" and data["model"]["name"] == "tiny-resnet"
    assert re.fullmatch(r"[0-9a-f]{64}", data["model"]["content_hash"])  # sha256
    assert {"cpu_model", "physical_cores", "sockets", "smt"} <= set(data["machine"])
    assert [(c["threads"], c["batch"]) for c in data["cells"]] == [(1, 1), (1, 2)]
    assert all(c["n"] >= 5 and c["mean_ms"] > 0 for c in data["cells"])
    assert "%]" in first.stderr and "ETA" in first.stderr  # progress lines in a log

    again = packrat(
        "profile",
        "tiny-resnet",
        "-T",
        "1",
        "--batches",
        "1,2,4",
        "-o",
        str(out),
        *QUICK,
        cache=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr and "2 cells already measured" in again.stderr
    after = json.loads(out.read_text())
    assert after["cells"][:2] == data["cells"], "measured cells are kept, not re-measured"
    assert [(c["threads"], c["batch"]) for c in after["cells"]] == [(1, 1), (1, 2), (1, 4)]

    fresh = packrat(
        "profile", "tiny-resnet", "-T", "1", "--batches", "1", "-o", str(out), *QUICK,
        "--fresh", cache=tmp_path,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    assert "measuring afresh" in fresh.stderr and "resuming" not in fresh.stderr
    replaced = json.loads(out.read_text())
    assert [(c["threads"], c["batch"]) for c in replaced["cells"]] == [(1, 1)]
    assert replaced["cells"][0] != data["cells"][0], "measured again"


def test_a_cached_profile_of_an_older_method_is_measured_afresh(tmp_path: Path) -> None:
    from packrat.profiler.profile_file import METHOD

    args = ("profile", "tiny-resnet", "-T", "1", "--batches", "1", *QUICK)
    first = packrat(*args, cache=tmp_path)
    assert first.returncode == 0, first.stderr
    (path,) = (tmp_path / "profiles").glob("tiny-resnet-*.json")
    data = json.loads(path.read_text())
    del data["method"]  # as Packrat wrote it before the method was recorded
    data["cells"][0]["mean_ms"] = 12345.0  # recognisable if it were kept
    path.write_text(json.dumps(data))

    again = packrat(*args, cache=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "ignoring the cached profile" in again.stderr
    assert ": an older Packrat measured it (method 1" in again.stderr
    assert "resuming" not in again.stderr
    redone = json.loads(path.read_text())
    assert redone["method"] == METHOD and redone["cells"][0]["mean_ms"] != 12345.0

    mine = tmp_path / "mine.json"  # a file the user names is refused, not replaced unasked
    mine.write_text(json.dumps(data))
    refused = packrat(*args, "-o", str(mine), cache=tmp_path)
    assert refused.returncode == 1
    assert f"another measuring method (1 vs {METHOD})" in refused.stderr
    assert "packrat profile --fresh" in refused.stderr
    assert json.loads(mine.read_text()) == data


def test_profile_in_passes_keeps_each_pass_and_their_median(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    args = ("profile", "tiny-resnet", "-T", "1", "--batches", "1,2", "-o", str(out))
    result = packrat(*args, "--passes", "3", "--max-runs", "6", "--max-time", "1", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pass 3 of 3" in result.stderr
    data = json.loads(out.read_text())
    assert data["sampling"]["passes"] == 3
    for cell in data["cells"]:  # 6 runs at most, shared by 3 passes: 2 runs each
        assert [p["n"] for p in cell["passes"]] == [2, 2, 2] and cell["n"] == 6
        means = sorted(p["mean_ms"] for p in cell["passes"])
        assert cell["mean_ms"] == means[1]
    bad = packrat(*args, "--passes", "0", cache=tmp_path)
    assert bad.returncode != 0 and "--passes" in bad.stderr


def test_resume_refuses_another_model(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert (
        packrat(
            "profile",
            "tiny-resnet",
            "-T",
            "1",
            "--batches",
            "1",
            "-o",
            str(out),
            *QUICK,
            cache=tmp_path,
        ).returncode
        == 0
    )
    other = packrat(
        "profile", "tiny-bert", "-T", "1", "--batches", "1", "-o", str(out), *QUICK, cache=tmp_path
    )
    assert other.returncode == 1
    assert "profiles another model" in other.stderr


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_contention_profile_times_each_cell_beside_its_copies(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    args = ("profile", "tiny-resnet", "-T", "2", "--batches", "1", "-o", str(out))
    result = packrat(*args, "--contention", "--max-time", "0.5", "--max-runs", "4", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "contention" in result.stdout
    data = json.loads(out.read_text())
    assert data["kind"] == "contention"
    runs = {c["threads"]: c["n"] for c in data["cells"]}
    # two 1-thread instances ran at once and both were timed: a round of 4 runs each, pooled;
    # the 2-thread cell has no room for a neighbour, so it is one instance's 4 runs
    assert runs == {1: 8, 2: 4}
    default = packrat(*args, *QUICK, cache=tmp_path)  # on 2 cores, auto profiles with contention
    assert default.returncode == 0, default.stderr
    assert json.loads(out.read_text())["cells"] == data["cells"]  # resumed: nothing missing
    isolated = packrat(*args, "--isolated", *QUICK, cache=tmp_path)
    assert isolated.returncode == 1 and "kind of measurement" in isolated.stderr


def test_bench_reports_and_writes_files(tmp_path: Path) -> None:
    # bench plans on a hand-written profile (`packrat profile` is tested above, and takes a
    # minute): what it measures does not depend on the profile's figures.
    prof = tmp_path / "p.json"
    cores = str(min(2, len(os.sched_getaffinity(0))))
    latencies = {(1, 1): 2.0, (1, 2): 3.0, (2, 1): 1.5, (2, 2): 2.5}
    cells = {cell: CellStats(ms, ms, ms, 0.0, 5) for cell, ms in latencies.items()}
    save_profile(Profile("tiny-resnet", "0" * 64, {}, "test", cells), prof)
    result = packrat(
        "bench",
        "tiny-resnet",
        "--batches",
        "1,2",
        "-T",
        cores,
        "-p",
        str(prof),
        "-o",
        str(tmp_path / "out"),
        cache=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "mean speedup of Packrat over the fat instance" in result.stdout
    assert "PSS total MiB" in result.stdout
    csv_text = (tmp_path / "out" / f"tiny-resnet-T{cores}.csv").read_text()
    assert "packrat" in csv_text and "fat" in csv_text
    assert (tmp_path / "out" / f"tiny-resnet-T{cores}.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("profile", "tiny-resnet", "-T", "100000"), "asked for 100000 cores"),
        (("bench", "tiny-resnet", "-T", "100000"), "asked for 100000 cores"),
        (("profile", "no-such-model"), "neither a zoo model"),
        (("profile", "https://example.com/m.pt"), "URL"),
        (("bench", "tiny-resnet", "--batches", "1,x"), "--batches must be"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = packrat(*args, cache=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_corrupt_model_and_profile_files(tmp_path: Path) -> None:
    bad_model = tmp_path / "m.pt"
    bad_model.write_bytes(b"not a torchscript archive")
    result = packrat(
        "profile", str(bad_model), "--input-shape", "4", "-T", "1", "--batches", "1", cache=tmp_path
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    bad_profile = tmp_path / "p.json"
    bad_profile.write_text("{")
    result = packrat(
        "bench", "tiny-resnet", "--batches", "1", "-T", "1", "-p", str(bad_profile), cache=tmp_path
    )
    assert result.returncode == 1 and "cannot read profile" in result.stderr


def test_batch_no_plan_covers(tmp_path: Path) -> None:
    prof = tmp_path / "p.json"
    assert (
        packrat(
            "profile",
            "tiny-resnet",
            "-T",
            "1",
            "--batches",
            "4",
            "-o",
            str(prof),
            *QUICK,
            cache=tmp_path,
        ).returncode
        == 0
    )
    result = packrat(
        "bench", "tiny-resnet", "--batches", "3", "-T", "1", "-p", str(prof), cache=tmp_path
    )
    assert result.returncode == 1
    assert "no plan covers batch 3 within 1 cores" in result.stderr
