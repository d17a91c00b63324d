"""Turn an eager module into graph form: a TorchScript trace or a `torch.export` program.

Both keep the batch dimension dynamic so one graph serves every batch size a plan may give an
instance. Neither freezes the graph: weights stay module attributes (not constants folded into
the graph), so `Handler.shared_tensors()` can still swap them for shared memory.
Importing this module imports torch.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from packrat.errors import ModelError
from packrat.models.tensor_handler import first_tensor

# torch.export specializes a dimension whose example size is 0 or 1 to that constant, so a
# program exported from a batch of 1 would only ever run batch 1.
MIN_EXPORT_BATCH = 2


@contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence deprecation notices for torch.jit and tracer warnings inside the block.

    torch 2.13 deprecates torch.jit.trace/save/load; Packrat uses TorchScript on purpose (it is
    the graph mode the latency model was measured in). Tracer warnings flag Python branches on
    tensor values or shapes; the non-batch shapes are fixed by the input spec, and the batch
    dimension is checked by `check_batch_independent` where a trace is written to a file.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=re.escape("`torch.jit.") + r".*deprecated", category=Warning
        )
        # torch.jit does not list TracerWarning in its __all__, though it is public.
        tracer_warning = torch.jit.TracerWarning  # type: ignore[attr-defined]
        warnings.filterwarnings("ignore", category=tracer_warning)
        # transformers 5 calls its own deprecated API when traced; nothing a user can act on.
        warnings.filterwarnings(
            "ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning
        )
        yield


def trace_module(module: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """A TorchScript trace of `module(example)`; ModelError with torch's message if it fails.

    Traced without `check_trace`, which would re-run the model to compare graphs and double the
    load time of every worker.
    """
    with quiet_torchscript(), torch.no_grad():
        try:
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                module, example, check_trace=False
            )
        except Exception as exc:  # torch raises many types; all mean "not traceable"
            raise ModelError(f"cannot trace the model: {first_line(exc)}") from exc
    if not isinstance(traced, torch.jit.ScriptModule):
        raise ModelError("cannot trace the model: tracing did not produce a TorchScript module")
    return traced


def export_module(module: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """A `torch.export` program of `module(example)` whose batch dimension is dynamic (>= 1).

    `example` must hold at least MIN_EXPORT_BATCH rows (see there); raises ModelError if export
    fails, e.g. because the model's code fixes the batch size.
    """
    if example.shape[0] < MIN_EXPORT_BATCH:
        raise ModelError(f"export needs an example batch of >= {MIN_EXPORT_BATCH} requests")
    batch = torch.export.Dim("batch", min=1)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch raises many types; all mean "not exportable"
        raise ModelError(f"cannot torch.export the model: {first_line(exc)}") from exc


def check_batch_independent(
    reference: torch.nn.Module,
    graph: torch.nn.Module,
    batches: list[torch.Tensor],
) -> None:
    """Raise ModelError unless `graph` matches `reference` on every batch in `batches`.

    Catches graphs that baked the example's batch size into a constant: they fail or, worse,
    silently compute something else at other batch sizes.
    """
    for batch in batches:
        with torch.inference_mode():
            try:
                expected = reference(batch)
                actual = graph(batch)
            except Exception as exc:  # any failure here means a graph fixed the batch size
                raise ModelError(
                    f"the model fails at batch size {batch.shape[0]}: {first_line(exc)}"
                ) from exc
        if not _allclose(expected, actual):
            raise ModelError(
                f"the exported graph differs from the model at batch size {batch.shape[0]}"
            )


def _allclose(expected: object, actual: object) -> bool:
    want, got = first_tensor(expected), first_tensor(actual)
    if want is None or got is None or want.shape != got.shape:
        return False
    return bool(torch.allclose(want.float(), got.float(), rtol=1e-4, atol=1e-5))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: torch appends C++ and TorchScript tracebacks."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
