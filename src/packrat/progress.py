"""Progress reports for long work (profiling, benchmarks), on stderr.

Library code reports through the small `Progress` protocol, so tests and servers can pass
`NullProgress`. On a terminal the CLI draws a rich bar with an ETA; in a log (stderr not a
terminal) it writes one line per step with the percentage done and the ETA instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress(Protocol):
    """Where long work reports how far it is. `units` are any additive measure of work."""

    def start(self, total_units: float, description: str) -> None: ...

    def advance(self, units: float, description: str | None = None) -> None: ...


class NullProgress:
    """Reports nowhere."""

    def start(self, total_units: float, description: str) -> None:
        pass

    def advance(self, units: float, description: str | None = None) -> None:
        pass


class _RichBar:
    def __init__(self, bar: RichProgress) -> None:
        self._bar = bar
        self._task = bar.add_task("", total=None)

    def start(self, total_units: float, description: str) -> None:
        self._bar.reset(self._task, total=total_units, description=description)

    def advance(self, units: float, description: str | None = None) -> None:
        self._bar.update(self._task, advance=units, description=description)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class LineProgress:
    """One line per step: `[ 42%] description (elapsed 1:02, ETA 1:30)`."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._total = 0.0
        self._done = 0.0
        self._started = time.monotonic()

    def start(self, total_units: float, description: str) -> None:
        self._total, self._done, self._started = total_units, 0.0, time.monotonic()
        self._console.print(f"[  0%] {description}", highlight=False)

    def advance(self, units: float, description: str | None = None) -> None:
        self._done += units
        elapsed = time.monotonic() - self._started
        share = self._done / self._total if self._total > 0 else 1.0
        eta = _clock(elapsed * (1 - share) / share) if share > 0 else "?"
        self._console.print(
            f"[{share:4.0%}] {description or ''} (elapsed {_clock(elapsed)}, ETA {eta})",
            highlight=False,
        )


@contextmanager
def progress_bar(console: Console | None = None) -> Iterator[Progress]:
    """A rich bar with elapsed time and ETA on a terminal; progress lines otherwise."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield LineProgress(console)
        return
    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    with bar:
        yield _RichBar(bar)
