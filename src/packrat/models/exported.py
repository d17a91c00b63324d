"""`torch.export` programs (`.pt2` files, as written by `torch.export.save`).

The program must take one tensor input, [batch, *shape], and be exported with a dynamic batch
dimension (`packrat export` does this) so it runs at every batch size a plan may choose. Its
per-request input spec comes from, in order: the `input_spec` argument, the `packrat.json`
extra file that `packrat export` stores, or the example inputs saved with the program (integer
examples give the value range [min, max + 1), the only range known to be valid).

Security: loading a .pt2 file deserializes the program it contains. Only load files you trust.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from packrat.errors import ModelError
from packrat.models.base import Handler
from packrat.models.file_source import LocalFileSource
from packrat.models.identity import existing_file
from packrat.models.inputs import FLOAT_DTYPES, INTEGER_DTYPES, InputSpec
from packrat.models.metadata import METADATA_FILE, ExportMetadata

if TYPE_CHECKING:
    import torch


class ExportedSource(LocalFileSource):
    """A `torch.export` program on local disk, run through `program.module()` on the CPU.

    path: the .pt2 file; stored absolute so a worker with another working directory finds it.
    input_spec: overrides the spec stored in the file or derived from its example inputs.
    """

    def load(self) -> Handler:
        """Load with `torch.export.load` and wrap `program.module()` for serving.

        Raises ModelError on a missing, unreadable or non-.pt2 file, or a program whose
        signature is not one tensor in.
        """
        import torch

        from packrat.models.tensor_handler import TensorHandler, check_one_input
        from packrat.models.tracing import first_line

        existing_file(self.path, "exported program")
        extra_files = {METADATA_FILE: ""}
        try:
            with _quiet_export_log():
                program = torch.export.load(self.path, extra_files=extra_files)
        except Exception as exc:  # torch raises RuntimeError, BadZipFile, ...: all "unreadable"
            raise ModelError(
                f"cannot load exported program '{self.path}' (is it from torch.export.save?): "
                f"{first_line(exc)}"
            ) from exc
        check_one_input(len(program.graph_signature.user_inputs), f"exported program '{self.path}'")
        # Exported modules are already in inference form and refuse `.eval()`.
        module = program.module()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        metadata = ExportMetadata.from_text(extra_files[METADATA_FILE], f"'{self.path}'")
        spec = self.input_spec
        if spec is None:
            spec = metadata.input_spec if metadata else _spec_from_examples(program.example_inputs)
        return TensorHandler(module, spec, name=self.name)


@contextmanager
def _quiet_export_log() -> Iterator[None]:
    # On an unreadable file torch.export.load logs a full traceback at WARNING before raising;
    # the ModelError we raise instead says all the user needs.
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _spec_from_examples(example_inputs: Any) -> InputSpec | None:
    """The spec implied by a program's saved example inputs, if they are one tensor."""
    if not example_inputs:
        return None
    args, kwargs = example_inputs
    if kwargs or len(args) != 1:
        return None
    example: torch.Tensor = args[0]
    dtype = str(example.dtype).removeprefix("torch.")
    if example.dim() < 1 or dtype not in FLOAT_DTYPES + INTEGER_DTYPES:
        return None
    shape = tuple(int(d) for d in example.shape[1:])
    if dtype in FLOAT_DTYPES:
        return InputSpec(shape, dtype)
    return InputSpec(shape, dtype, low=int(example.min()), high=int(example.max()) + 1)
