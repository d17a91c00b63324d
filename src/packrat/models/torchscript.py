"""TorchScript model files (`.pt`, `.ts`, `.torchscript`), as written by `torch.jit.save`.

The file must hold a module that maps a [batch, *shape] tensor to a batch-first tensor (or a
tuple/dict whose first tensor is). Its per-request input spec comes from, in order: the
`input_spec` argument, or the `packrat.json` extra file that `packrat export` stores in it.

Security: loading a TorchScript file deserializes and runs code it contains. Only load files
you trust.
"""

from __future__ import annotations

from pathlib import Path

from packrat.errors import ModelError
from packrat.models.base import Handler
from packrat.models.file_source import LocalFileSource
from packrat.models.identity import existing_file
from packrat.models.inputs import InputSpec
from packrat.models.metadata import METADATA_FILE, ExportMetadata


class TorchScriptSource(LocalFileSource):
    """A TorchScript file on local disk, loaded onto the CPU in eval mode.

    path: the file; stored absolute so a worker with another working directory finds it.
    input_spec: overrides the spec stored in the file, if any.
    """

    def load(self) -> Handler:
        """Load the module with `torch.jit.load(map_location="cpu")` and wrap it for serving.

        Raises ModelError on a missing, unreadable or non-TorchScript file.
        """
        import torch

        from packrat.models.tensor_handler import TensorHandler
        from packrat.models.tracing import first_line, quiet_torchscript

        existing_file(self.path, "TorchScript file")
        extra_files = {METADATA_FILE: ""}
        try:
            with quiet_torchscript():
                module = torch.jit.load(  # type: ignore[no-untyped-call]
                    str(self.path), map_location="cpu", _extra_files=extra_files
                )
        except Exception as exc:  # torch raises RuntimeError, ValueError, ...: all "unreadable"
            raise ModelError(
                f"cannot load TorchScript file '{self.path}' (is it from torch.jit.save?): "
                f"{first_line(exc)}"
            ) from exc
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        spec = self.input_spec or _stored_spec(extra_files[METADATA_FILE], self.path)
        return TensorHandler(module, spec, name=self.name)


def _stored_spec(text: str | bytes, path: Path) -> InputSpec | None:
    metadata = ExportMetadata.from_text(text, f"'{path}'")
    return None if metadata is None else metadata.input_spec
