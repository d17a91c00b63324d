"""The journal of benchmarks/backends_side_by_side.py: every measurement appended to
WORKDIR/journal.jsonl as soon as it is taken, so that a run stopped part-way (a reboot, a
killed session) is finished by running the same command with `--resume` instead of again.

One JSON object per line: first the settings it was taken with ({"settings": {"rounds",
"warmup", "runs"}}; resuming with others is refused), then of two kinds:
- a system's settings once built: {"model", "system", "ready": {...}};
- one system's batches of one size in one round: {"model", "round", "batch", "system",
  "ms": [...], "note"} (`ms` empty: nothing was timed; "error" says why where it failed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Key = tuple[str, int, int, str]
"""(model, round from 1, batch size, system)."""


class Journal:
    """What a run has measured so far, and the file each new measurement is appended to."""

    def __init__(self, path: Path, resume: bool, settings: dict[str, int]) -> None:
        self.path = path
        self.ready: dict[tuple[str, str], dict[str, str]] = {}
        self.measured: dict[Key, dict[str, Any]] = {}
        if resume and path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            taken_with = lines[0].get("settings") if lines else settings
            if taken_with != settings:
                raise SystemExit(
                    f"{path} was taken with {taken_with}, not {settings}: resume with the "
                    "same --rounds, --warmup and --runs, or start afresh without --resume"
                )
            for entry in lines[1:]:
                self._take(entry)
        if not (resume and path.exists()):
            path.write_text(json.dumps({"settings": settings}) + "\n")

    def __len__(self) -> int:
        return len(self.measured)

    def get(self, key: Key) -> dict[str, Any] | None:
        """The measurement of `key` taken before, if any."""
        return self.measured.get(key)

    def record_ready(self, model: str, system: str, properties: dict[str, str]) -> None:
        self._append({"model": model, "system": system, "ready": properties})

    def record(self, model: str, entry: dict[str, Any]) -> None:
        """Keep one measurement (the keys of `ModelRun.samples`' entries)."""
        self._append({"model": model, **entry})

    def _append(self, entry: dict[str, Any]) -> None:
        self._take(entry)
        with self.path.open("a") as file:
            file.write(json.dumps(entry) + "\n")

    def _take(self, entry: dict[str, Any]) -> None:
        if "ready" in entry:
            self.ready[(entry["model"], entry["system"])] = entry["ready"]
        else:
            key = (entry["model"], entry["round"], entry["batch"], entry["system"])
            self.measured[key] = entry
