"""The common part of model formats that live in one local file: path and identity."""

from __future__ import annotations

import os
from pathlib import Path

from packrat.models.base import ModelIdentity, ModelSource
from packrat.models.identity import file_content_hash
from packrat.models.inputs import InputSpec


class LocalFileSource(ModelSource):
    """A model file on local disk.

    path: stored absolute, so a worker with another working directory finds it.
    input_spec: overrides the per-request input the file records, if any.
    """

    def __init__(self, path: str | os.PathLike[str], input_spec: InputSpec | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self.name = self.path.name
        self.input_spec = input_spec

    def identity(self) -> ModelIdentity:
        """The file name and the sha256 of its bytes (and of the spec, if one is passed)."""
        return ModelIdentity(self.name, file_content_hash(self.path, self.input_spec))
