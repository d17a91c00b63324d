"""The `packrat` command line: serve | profile | plan | bench | loadgen | zoo | export | simulate.

Each command lives in its own module; importing them registers them on `app`.
"""

# Registration order is the order `packrat --help` lists the commands in.
from packrat.cli import serve_cmd, profile_cmd, plan_cmd, bench_cmd, loadgen_cmd, model_cmds  # noqa: F401, I001
from packrat.cli import simulate_cmd  # noqa: F401, I001
from packrat.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
