"""benchmarks/backends_side_by_side.py's bookkeeping: the journal a stopped run resumes from,
and the batch sizes asked per model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # as `python benchmarks/X.py` sees the harness
from backends_side_by_side import batches_per_model  # noqa: E402

from harness.backends.journal import Journal  # noqa: E402

SETTINGS = {"rounds": 3, "warmup": 1, "runs": 1}


def _entry(round_: int, batch: int, system: str, ms: list[float]) -> dict[str, object]:
    return {"round": round_, "batch": batch, "system": system, "ms": ms, "note": "<1,2,1>"}


def test_a_resumed_journal_holds_what_the_stopped_run_measured(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    stopped = Journal(path, resume=False, settings=SETTINGS)
    stopped.record_ready("resnet50", "packrat", {"precision": "fp32"})
    stopped.record("resnet50", _entry(1, 8, "packrat", [41.5]))
    stopped.record("resnet50", _entry(1, 8, "ort-default", [39.0]))
    resumed = Journal(path, resume=True, settings=SETTINGS)
    assert len(resumed) == 2
    taken = resumed.get(("resnet50", 1, 8, "packrat"))
    assert taken == {"model": "resnet50", **_entry(1, 8, "packrat", [41.5])}
    assert resumed.get(("resnet50", 2, 8, "packrat")) is None
    assert resumed.ready == {("resnet50", "packrat"): {"precision": "fp32"}}
    # What the resumed run measures is appended after what it found.
    resumed.record("resnet50", _entry(2, 8, "packrat", [40.0]))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"settings": SETTINGS} and len(lines) == 5


def test_a_journal_is_resumed_only_with_its_own_settings(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path, resume=False, settings=SETTINGS).record("gpt2", _entry(1, 1, "packrat", [9.0]))
    with pytest.raises(SystemExit, match="resume with the same --rounds, --warmup and --runs"):
        Journal(path, resume=True, settings={**SETTINGS, "runs": 5})
    # Without --resume the journal starts empty.
    assert len(Journal(path, resume=False, settings={**SETTINGS, "runs": 5})) == 0
    assert len(path.read_text().splitlines()) == 1


def test_batch_sizes_for_every_model_and_for_one() -> None:
    found = batches_per_model(["1-3", "gpt2=1,2,4-5"], ["resnet50", "gpt2"])
    assert found == {"resnet50": [1, 2, 3], "gpt2": [1, 2, 4, 5]}
    assert batches_per_model(["bert-base=8"], ["bert-base", "gpt2"]) == {
        "bert-base": [8],
        "gpt2": list(range(1, 65)),
    }
    with pytest.raises(SystemExit, match="resnet50 is not in --models"):
        batches_per_model(["resnet50=1"], ["gpt2"])
    with pytest.raises(SystemExit, match="give positive batch sizes"):
        batches_per_model(["0-4"], ["gpt2"])
