"""Load generator reports: summaries against numpy, JSON and CSV round trips, table, PNG."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from packrat.bench.loadgen import (
    NOT_SENT,
    LoadResult,
    Phase,
    Protocol,
    RequestRecord,
    Target,
    plot_timeline,
    read_csv,
    read_json,
    summary_table,
    write_csv,
    write_json,
)
from packrat.errors import PackratError

PHASES = (Phase("phase 0 @ 5 rps", 0.0, 10.0), Phase("phase 1 @ 40 rps", 10.0, 20.0))


def make_result(seed: int = 0) -> LoadResult:
    rng = np.random.default_rng(seed)
    records = []
    for i, at in enumerate(np.sort(rng.uniform(0, 20, size=200)).tolist()):
        phase = PHASES[0].name if at < 10 else PHASES[1].name
        sent = at + float(rng.uniform(0, 0.002))
        done = sent + float(rng.lognormal(-4, 0.5))
        if i % 50 == 7:
            records.append(RequestRecord(phase, at, None, at, error=NOT_SENT, detail="cap"))
        elif i % 50 == 9:
            records.append(RequestRecord(phase, at, sent, done, 503, None, "HTTP 503", "busy"))
        else:
            records.append(RequestRecord(phase, at, sent, done, 200, float(rng.uniform(1, 3))))
    return LoadResult(
        Target("http://127.0.0.1:8080", "m", Protocol.V2), PHASES, tuple(records), 1.7e9
    )


def test_summary_matches_numpy() -> None:
    result = make_result()
    summary = result.summary()
    for phase, s in zip(PHASES, summary.phases, strict=True):
        records = [r for r in result.records if r.phase == phase.name]
        ok_ms = np.array([r.latency_ms for r in records if r.ok])
        assert s.name == phase.name and s.requests == len(records)
        assert s.succeeded == ok_ms.size and s.failed == len(records) - ok_ms.size
        assert s.sent == sum(r.sent_s is not None for r in records)
        assert s.throughput_rps == pytest.approx(ok_ms.size / 10.0)
        assert s.latency is not None and s.latency.count == ok_ms.size
        assert s.latency.mean_ms == pytest.approx(ok_ms.mean())
        assert s.latency.max_ms == pytest.approx(ok_ms.max())
        for q, got in ((50, s.latency.p50_ms), (90, s.latency.p90_ms), (99, s.latency.p99_ms)):
            assert got == pytest.approx(np.percentile(ok_ms, q))
    overall = summary.overall
    assert overall.requests == 200 and overall.failures == {"HTTP 503": 4, NOT_SENT: 4}
    assert overall.sent == 196 and overall.succeeded == 192
    assert overall.throughput_rps == pytest.approx(192 / 20.0)


def test_latency_counts_from_the_scheduled_time() -> None:
    record = RequestRecord("p", 1.0, 1.5, 1.75, 200)
    assert record.latency_ms == pytest.approx(750.0)
    assert RequestRecord("p", 1.0, None, 1.0, error=NOT_SENT).latency_ms is None
    with pytest.raises(PackratError, match="before its time"):
        RequestRecord("p", 1.0, 0.5, 2.0)


def test_an_empty_phase_has_no_latency() -> None:
    result = LoadResult(Target("http://127.0.0.1:1", "m"), (Phase("p", 0.0, 0.0),), (), 0.0)
    s = result.summary().overall
    assert s.latency is None and math.isnan(s.throughput_rps) and s.requests == 0


def test_records_must_name_known_phases() -> None:
    with pytest.raises(PackratError, match="unknown phases"):
        LoadResult(Target("http://127.0.0.1:1", "m"), PHASES, (RequestRecord("x", 0, 0, 1),), 0.0)


def test_json_round_trip(tmp_path: Path) -> None:
    result = make_result()
    path = tmp_path / "out" / "load.json"
    write_json(result, path)
    back = read_json(path)
    assert back.records == result.records
    assert back.phases == result.phases and back.target == result.target
    assert back.start_unix_s == result.start_unix_s
    document = json.loads(path.read_text())
    assert document["summary"]["overall"]["requests"] == 200
    assert len(document["requests"]) == 200
    assert document["requests"][0]["latency_ms"] == result.records[0].latency_ms


def test_json_without_finite_throughput(tmp_path: Path) -> None:
    result = LoadResult(Target("http://127.0.0.1:1", "m"), (Phase("p", 0.0, 0.0),), (), 0.0)
    write_json(result, tmp_path / "e.json")
    assert (
        json.loads((tmp_path / "e.json").read_text())["summary"]["overall"]["throughput_rps"]
        is None
    )


def test_csv_round_trip(tmp_path: Path) -> None:
    result = make_result()
    path = tmp_path / "load.csv"
    write_csv(result.records, path)
    assert read_csv(path) == list(result.records)
    header = path.read_text().splitlines()[0]
    assert header.startswith("phase,scheduled_s,sent_s,done_s,latency_ms,status,compute_ms,error")


def test_bad_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"format": "other"}')
    with pytest.raises(PackratError, match="not a packrat-loadgen/1"):
        read_json(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("[")
    with pytest.raises(PackratError, match="not a valid"):
        read_json(tmp_path / "y.json")
    (tmp_path / "z.csv").write_text("phase,scheduled_s\np,abc\n")
    with pytest.raises(PackratError, match="not a load generator CSV"):
        read_csv(tmp_path / "z.csv")


def test_summary_table_lists_phases_and_overall() -> None:
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(summary_table(make_result().summary(), "m"))
    text = buffer.getvalue()
    for name in ("phase 0 @ 5 rps", "phase 1 @ 40 rps", "overall", "HTTP 503: 4", NOT_SENT):
        assert name in text


def test_timeline_png_is_written(tmp_path: Path) -> None:
    path = tmp_path / "plots" / "timeline.png"
    plot_timeline(make_result(), path, markers=[(5.0, "replan <2,1,8>"), (12.5, "batch 16")])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = LoadResult(Target("http://127.0.0.1:1", "m"), (Phase("p", 0.0, 0.0),), (), 0.0)
    plot_timeline(empty, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_timeline_draws_a_rug_of_many_events(tmp_path: Path) -> None:
    from matplotlib.image import imread

    def orange_pixels(path: Path) -> int:  # the rug's colour, tab:orange (#ff7f0e)
        rgb = imread(path)[..., :3]
        return int((np.linalg.norm(rgb - [1.0, 0x7F / 255, 0x0E / 255], axis=2) < 0.2).sum())

    plot_timeline(make_result(), tmp_path / "plain.png")
    switches_s = np.linspace(0.5, 19.5, 300).tolist()
    plot_timeline(make_result(), tmp_path / "rug.png", rug=switches_s, rug_label="switches")
    assert orange_pixels(tmp_path / "plain.png") == 0
    assert orange_pixels(tmp_path / "rug.png") > 300
