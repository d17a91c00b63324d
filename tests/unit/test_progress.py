"""Progress lines for logs: percentage and ETA from the units done."""

from __future__ import annotations

import io

from rich.console import Console

from packrat.progress import LineProgress, progress_bar


def test_line_progress_reports_share_and_eta() -> None:
    buffer = io.StringIO()
    progress = LineProgress(Console(file=buffer, width=200))
    progress.start(4.0, "profiling m")
    progress.advance(1.0, "cell a")
    progress.advance(3.0, "cell b")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "[  0%] profiling m"
    assert lines[1].startswith("[ 25%] cell a (elapsed 0:00, ETA 0:00")
    assert lines[2].startswith("[100%] cell b")


def test_logs_get_lines_not_a_bar() -> None:
    with progress_bar(Console(file=io.StringIO())) as bar:
        assert isinstance(bar, LineProgress)
