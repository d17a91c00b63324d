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


def test_help_defaults_are_the_configs_defaults() -> None:
    """The defaults shown come from the config dataclasses, so they cannot drift apart."""
    from packrat.controller.batching import BatchingConfig
    from packrat.controller.calibration import CalibrationConfig
    from packrat.controller.kept_layouts import LAYOUTS_PER_CORE
    from packrat.controller.policy import PolicyKind
    from packrat.profiler.contention import ProfileKindSetting
    from packrat.server.launch_config import LaunchConfig

    batching, launch, calibration = BatchingConfig(), LaunchConfig(), CalibrationConfig()
    assert launch.batching == batching
    assert (launch.policy, launch.profile_kind) == (PolicyKind.AUTO, ProfileKindSetting.AUTO)
    serve = " ".join(runner.invoke(app, ["serve", "--help"], terminal_width=400).output.split())
    for shown in (
        f"plans are made for it [default: {batching.max_batch_size}]",
        f"[default: {batching.max_batch_delay_ms:g}: it leaves when the model is free",
        f"more get 503 with Retry-After [default: {batching.max_queue}]",
        f"0: not held [default: {batching.max_queue_wait_ms:g}]",
        f"[default: {launch.policy}]",
        f"[default: {launch.profile_kind}]",
        f"{1 + calibration.tolerance:g}x either way, median of {calibration.samples}",
        f"the kept ones can run [default: {LAYOUTS_PER_CORE} x its cores]",
    ):
        assert shown in serve
    simulate = runner.invoke(app, ["simulate", "--help"], terminal_width=400).output
    for name, option in (("max_batch_size", "--max-batch-size"), ("max_queue", "--max-queue")):
        line = next(line for line in simulate.splitlines() if f"{option} " in line)
        assert f"[default: {getattr(batching, name)}]" in line
