"""The typer app, its consoles, and what every command shares: error handling and options.

Every user error is a PackratError, printed as one line on stderr with exit status 1; no
traceback. Commands import torch only when they run a model (`packrat plan` never does).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from packrat.errors import PackratError

if TYPE_CHECKING:
    from packrat.models.inputs import InputSpec

# Zoo models are built from configs; nothing may reach for a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = typer.Typer(
    name="packrat",
    help="Lowest-latency DNN inference on CPU servers: profile a model, plan thin pinned "
    "instances, run and benchmark them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help texts are plain text: with rich markup, "[default: 8]" read as a style tag vanished.
    rich_markup_mode=None,
)
# Piped output (logs, CI) gets wide tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)  # an error is one line, however long
T = TypeVar("T")


def guard(fn: Callable[[], T]) -> T:
    """Run a command body; a PackratError becomes one line on stderr and exit status 1."""
    try:
        return fn()
    except PackratError as exc:
        err.print(f"[bold red]packrat: error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("packrat: interrupted")
        raise typer.Exit(130) from None


def int_list(text: str, what: str) -> tuple[int, ...]:
    """Parse "1,2,4" into positive integers; PackratError naming `what` otherwise."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise PackratError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise PackratError(f"{what} must be positive integers, got {text!r}")
    return values


def input_spec(shape: str | None, dtype: str) -> InputSpec | None:
    """The per-request input of a model file that does not record it, from CLI options."""
    if shape is None:
        return None
    from packrat.models.inputs import InputSpec

    return InputSpec(shape=int_list(shape, "--input-shape"), dtype=dtype)


ModelArg = Annotated[
    str,
    typer.Argument(
        help="A zoo name (see `packrat zoo`), a TorchScript .pt, a torch.export .pt2, an "
        ".onnx or OpenVINO .xml file, a handler .py file or a TorchServe .mar archive."
    ),
]
CoresOpt = Annotated[
    int | None,
    typer.Option(
        "--cores", "-T", help="Core budget T (default: every physical core this process may use)."
    ),
]
ShapeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        help="Per-request input shape, e.g. 3,224,224, for model files that do not record it.",
    ),
]
DtypeOpt = Annotated[str, typer.Option("--input-dtype", help="Per-request input dtype.")]
SampleOpt = Annotated[
    Path | None,
    typer.Option(
        "--sample-request",
        help="A request body to profile a TorchServe archive with, e.g. an image "
        "[default: the archive's sample*/example* extra file, or its only image].",
        show_default=False,
    ),
]
MallocOpt = Annotated[
    bool,
    typer.Option(
        "--keep-freed-memory/--release-freed-memory",
        help="Workers keep freed memory in their heap (default), or use glibc's default of "
        "mapping and unmapping every large block, which page-faults on every batch.",
    ),
]
