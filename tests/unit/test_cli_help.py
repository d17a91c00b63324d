"""Every command's help text, as a user reads it."""

from __future__ import annotations

from typer.testing import CliRunner

from packrat.cli import app

runner = CliRunner()


def test_help_shows_the_defaults() -> None:
    """Help texts are plain: rich markup read "[default: 8]" as a tag and dropped it."""
    result = runner.invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Largest batch; plans are made for it [default: 8]." in result.output
    assert "[default: 0: it leaves when the model is free" in result.output
