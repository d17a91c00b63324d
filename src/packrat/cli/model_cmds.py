"""`packrat zoo` and `packrat export`: list the built-in models, write them as files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from packrat.cli.app import ModelArg, app, guard, out
from packrat.errors import PackratError


@app.command()
def zoo() -> None:
    """List the built-in models."""

    def body() -> None:
        from packrat.models.zoo import list_zoo

        for name, description in list_zoo():
            out.print(f"{name:14s} {description}", highlight=False)

    guard(body)


@app.command()
def export(
    model: ModelArg,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Write .pt (TorchScript) or .pt2 (torch.export)."),
    ],
) -> None:
    """Export a model to a TorchScript (.pt) or torch.export (.pt2) file."""

    def body() -> None:
        from packrat.models.export import export_program, export_torchscript
        from packrat.models.resolve import resolve_model

        source = resolve_model(model)
        if output.suffix == ".pt2":
            export_program(source, output)
        elif output.suffix == ".pt":
            export_torchscript(source, output)
        else:
            raise PackratError(f"--output must end in .pt or .pt2, got {output}")
        out.print(f"wrote {output}")

    guard(body)
