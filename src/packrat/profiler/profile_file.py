"""Profile files: Packrat's versioned JSON format, and the paper's published CSV format.

A profile is the table of single-instance batch latencies L(threads, batch) of one model on one
machine. The JSON format (version 1) is documented in docs/profile-format.md:

    {
      "format": "packrat-profile", "version": 1,
      "kind": "isolated",              # each cell measured with the rest of the machine idle
      "model": {"name": "resnet50", "content_hash": "<hex sha256>"},
      "machine": {"cpu_model": ..., "logical_cpus": ..., "physical_cores": ...,
                  "usable_cores": ..., "sockets": ..., "numa_nodes": ..., "smt": ...},
      "torch_version": "2.13.0+cpu",
      "source": "measured",                     # or "published:<file>" for the paper's CSVs
      "created": "2026-11-28T10:00:00+00:00",
      "method": 2,                     # how cells are measured (METHOD); absent: 1
      "sampling": {"warmup_runs": 2, "min_runs": 5, "max_runs": 200, "rel_ci": 0.03, ...},
      "engine": {"keep_freed_memory": true},    # how the measuring instance ran
      "cells": [{"threads": 1, "batch": 8, "mean_ms": 412.1, "p50_ms": 410.9,
                 "p95_ms": 421.0, "stdev_ms": 5.2, "n": 9}, ...]
    }

A cell measured in several passes (`packrat profile --passes`) also has "passes": a list of
each pass's own {"mean_ms", "p50_ms", "p95_ms", "stdev_ms", "n"}, and its "mean_ms" is the
median of theirs.

This module never imports torch: `packrat plan` reads profiles without it.
"""

from __future__ import annotations

import csv
import enum
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packrat.errors import ProfileError
from packrat.optimizer.table import LatencyTable
from packrat.stats import CellStats

FORMAT = "packrat-profile"
VERSION = 1

METHOD = 2
"""How this Packrat measures a cell, raised whenever a change makes cells read differently from
before: plans on a cached profile of an older method would be off, so it is measured afresh
(`outdated`). Method 1 timed every cell once, whatever else ran on its cores."""

METHOD_CHANGES = {
    2: "cells are measured again while other processes or the hypervisor take over 10% of "
    "their cores",
}
"""What each method after the first changed."""


class ProfileKind(enum.StrEnum):
    """How a profile's cells were measured; the two kinds are cached apart. Which one a first
    start makes: `packrat.profiler.contention.ProfileKindSetting`."""

    ISOLATED = "isolated"  # each cell with the rest of the machine idle
    CONTENTION = "contention"  # beside copies of itself on the other cores, as plans run


@dataclass(frozen=True)
class Profile:
    """A model's latency profile on one machine. `cells` maps (threads, batch) to its stats."""

    model_name: str
    content_hash: str
    machine: Mapping[str, Any]
    torch_version: str
    cells: Mapping[tuple[int, int], CellStats] = field(default_factory=dict)
    kind: ProfileKind = ProfileKind.ISOLATED
    source: str = "measured"
    created: str = ""
    sampling: Mapping[str, Any] = field(default_factory=dict)
    engine: Mapping[str, Any] = field(default_factory=dict)
    method: int = METHOD

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ProfileKind):  # e.g. read from a file
            try:
                object.__setattr__(self, "kind", ProfileKind(self.kind))
            except ValueError:
                kinds = tuple(kind.value for kind in ProfileKind)
                raise ProfileError(
                    f"profile kind must be one of {kinds}, got {self.kind!r}"
                ) from None

    def with_cell(self, threads: int, batch: int, stats: CellStats) -> Profile:
        """A copy with one more (or a replaced) cell."""
        cells = dict(self.cells)
        cells[(threads, batch)] = stats
        return replace(self, cells=cells)

    def latency_table(self) -> LatencyTable:
        """The mean latencies as the optimizer's table."""
        if not self.cells:
            raise ProfileError(f"profile of {self.model_name} has no cells")
        return LatencyTable.from_cells({k: v.mean_ms for k, v in self.cells.items()})

    @property
    def max_threads(self) -> int:
        return max((t for t, _ in self.cells), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "model": {"name": self.model_name, "content_hash": self.content_hash},
            "machine": dict(self.machine),
            "torch_version": self.torch_version,
            "source": self.source,
            "created": self.created or datetime.now(UTC).isoformat(timespec="seconds"),
            "method": self.method,
            "sampling": dict(self.sampling),
            "engine": dict(self.engine),
            "cells": [
                {"threads": t, "batch": b, **_stats_json(s)}
                for (t, b), s in sorted(self.cells.items())
            ],
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "profile") -> Profile:
        """Parse and validate; every problem is a ProfileError naming `where` and the field."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ProfileError(f'{where}: not a Packrat profile (missing "format": "{FORMAT}")')
        if data.get("version") != VERSION:
            raise ProfileError(
                f"{where}: profile version {data.get('version')!r} is not supported "
                f"(this Packrat reads version {VERSION})"
            )
        try:
            model = data["model"]
            cells: dict[tuple[int, int], CellStats] = {}
            for i, c in enumerate(data["cells"]):
                stats = _stats_from_json(c)
                t, b = int(c["threads"]), int(c["batch"])
                if t < 1 or b < 1 or not _valid(stats):
                    raise ProfileError(f"{where}: cell {i} is invalid: {c}")
                cells[(t, b)] = stats
            return cls(
                model_name=str(model["name"]),
                content_hash=str(model["content_hash"]),
                machine=dict(data["machine"]),
                torch_version=str(data["torch_version"]),
                cells=cells,
                kind=data.get("kind", ProfileKind.ISOLATED),  # checked on construction
                source=str(data.get("source", "measured")),
                created=str(data.get("created", "")),
                sampling=dict(data.get("sampling", {})),
                engine=dict(data.get("engine", {})),
                method=int(data.get("method", 1)),  # written from method 2 on
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(
                f"{where}: malformed profile ({type(exc).__name__}: {exc})"
            ) from None


def outdated(profile: Profile) -> str | None:
    """Why `profile` was measured by an older method than this Packrat's (None if it was not,
    or if it was not measured here: a published profile)."""
    if profile.source != "measured" or profile.method >= METHOD:
        return None
    changes = "; ".join(METHOD_CHANGES[m] for m in range(profile.method + 1, METHOD + 1))
    return f"an older Packrat measured it (method {profile.method}, now {METHOD}: {changes})"


def check_resumable(existing: Profile, fresh: Profile, where: str) -> None:
    """Refuse to resume `existing` (at `where`) with cells measured as `fresh` would be: of
    another model, kind, machine, torch, engine setting or measuring method."""
    if existing.content_hash != fresh.content_hash:
        raise ProfileError(
            f"{where} profiles another model "
            f"({existing.model_name}, {existing.content_hash[:19]}); "
            "choose another output file"
        )
    for label, a, b in (
        ("kind of measurement", existing.kind, fresh.kind),
        ("CPU", existing.machine.get("cpu_model"), fresh.machine.get("cpu_model")),
        ("torch version", existing.torch_version, fresh.torch_version),
        ("engine setting", dict(existing.engine), dict(fresh.engine)),
        ("measuring method", existing.method, fresh.method),
    ):
        if a != b:
            raise ProfileError(
                f"{where} was measured with another {label} ({a} vs {b}); measure it afresh "
                "(packrat profile --fresh) or choose another output file"
            )


def _stats_json(stats: CellStats) -> dict[str, Any]:
    """A cell's stats as JSON: "passes" only for a cell measured in several."""
    data: dict[str, Any] = {k: v for k, v in asdict(stats).items() if k != "passes"}
    if stats.passes:
        data["passes"] = [_stats_json(p) for p in stats.passes]
    return data


def _stats_from_json(c: Mapping[str, Any]) -> CellStats:
    """Inverse of `_stats_json`; KeyError, TypeError or ValueError on a malformed cell."""
    return CellStats(
        mean_ms=float(c["mean_ms"]),
        p50_ms=float(c["p50_ms"]),
        p95_ms=float(c["p95_ms"]),
        stdev_ms=float(c["stdev_ms"]),
        n=int(c["n"]),
        passes=tuple(_stats_from_json(p) for p in c.get("passes", ())),
    )


def _valid(stats: CellStats) -> bool:
    return stats.mean_ms > 0 and stats.n >= 1 and all(_valid(p) for p in stats.passes)


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write atomically (temp file + rename), so an interrupted sweep never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(profile.to_json(), f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_profile(path: str | Path, *, mode: str = "script") -> Profile:
    """Read a Packrat JSON profile or a published CSV (see `read_published_csv`)."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"profile file not found: {path}")
    if path.suffix.lower() == ".csv":
        return read_published_csv(path, mode=mode)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc})") from None
    return Profile.from_json(data, where=str(path))


_CSV_COLUMNS = ("benchmark", "topology", "intraop_threads", "batch_size", "latency(avg)")


def read_published_csv(path: str | Path, *, mode: str = "script") -> Profile:
    """Read the authors' published single-instance CSV (../shared/paper-profiles/).

    Keeps rows of `<model>_manual_script` (TorchScript; `mode="eager"` takes `_manual_none`)
    measured with the `sequential` topology, and uses `latency(avg)` as the mean. The published
    files carry no per-run samples, so p50/p95 are the mean and n is 1. Multi-instance files
    (several instances per (threads, batch)) are refused: they are not single-instance profiles.
    """
    path = Path(path)
    suffix = {"script": "_manual_script", "eager": "_manual_none"}.get(mode)
    if suffix is None:
        raise ProfileError(f"mode must be 'script' or 'eager', got {mode!r}")
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfileError(f"{path}: cannot read CSV ({exc})") from None
    if not rows or any(col not in rows[0] for col in _CSV_COLUMNS):
        raise ProfileError(f"{path}: not a published profile CSV (needs columns {_CSV_COLUMNS})")
    cells: dict[tuple[int, int], CellStats] = {}
    model = ""
    try:
        for row in rows:
            bench = row["benchmark"]
            if not bench.endswith(suffix) or row["topology"] != "sequential":
                continue
            key = (int(row["intraop_threads"]), int(row["batch_size"]))
            if key in cells:
                raise ProfileError(
                    f"{path}: several rows for threads={key[0]}, batch={key[1]}; "
                    "this looks like a multi-instance file, not a single-instance profile"
                )
            mean = float(row["latency(avg)"])
            cells[key] = CellStats(mean_ms=mean, p50_ms=mean, p95_ms=mean, stdev_ms=0.0, n=1)
            model = bench[: -len(suffix)]
    except (KeyError, ValueError) as exc:
        raise ProfileError(f"{path}: malformed row ({type(exc).__name__}: {exc})") from None
    if not cells:
        raise ProfileError(f"{path}: no {mode} rows with the sequential topology")
    max_threads = max(t for t, _ in cells)
    return Profile(
        model_name=model,
        content_hash=f"published:{path.parent.name}/{path.name}",
        machine={
            "cpu_model": f"published: {path.parent.name}",
            "physical_cores": max_threads,
            "usable_cores": max_threads,
        },
        torch_version="unknown (published)",
        cells=cells,
        source=f"published:{path.parent.name}/{path.name}",
    )
