"""The parts of a benchmark's Markdown report common to all: the machine, the versions, and the
hand-written analysis kept when a report is written again."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

ANALYSIS_MARKER = "<!-- analysis: kept when the benchmark rewrites this file -->"


def kept_analysis(path: Path) -> str:
    """The hand-written part of an existing report: from ANALYSIS_MARKER to the end."""
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find(ANALYSIS_MARKER)
    return "" if at < 0 else "\n" + text[at:]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Python's version and those of the packages a serving benchmark depends on, and of
    `extra` ones (e.g. the runtimes a backend benchmark runs)."""
    import importlib.metadata as md

    found = {"Python": platform.python_version()}
    for package in ("packrat", "torch", "uvicorn", "fastapi", "httpx", *extra):
        with contextlib.suppress(md.PackageNotFoundError):
            found[package] = md.version(package)
    return found
