"""The `packrat.json` record that `packrat export` stores inside TorchScript and .pt2 files.

It carries what the file itself cannot say: the per-request input spec (so the file can be
profiled without --input-shape) and the identity of the model it was exported from.
Format (version 1):

    {"format": 1, "input_spec": {"shape": [3, 224, 224], "dtype": "float32"},
     "source": {"name": "resnet50", "content_hash": "<sha256>"}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from packrat.errors import ModelError
from packrat.models.base import ModelIdentity
from packrat.models.identity import canonical_json
from packrat.models.inputs import InputSpec

METADATA_FILE = "packrat.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExportMetadata:
    """What an exported file records about itself: its input spec and the model it came from."""

    input_spec: InputSpec
    source: ModelIdentity

    def to_text(self) -> str:
        """The JSON text stored as the archive's `packrat.json` extra file."""
        return canonical_json(
            {
                "format": FORMAT_VERSION,
                "input_spec": self.input_spec.to_json(),
                "source": {"name": self.source.name, "content_hash": self.source.content_hash},
            }
        )

    @classmethod
    def from_text(cls, text: str | bytes, where: str) -> ExportMetadata | None:
        """Parse `to_text` output read from `where`; None if the file stores none (empty text).

        Raises ModelError naming `where` if the record is not valid JSON of a known format.
        """
        if not text:
            return None
        try:
            data = json.loads(text)
            version = data["format"]
            spec_data = data["input_spec"]
            source = data["source"]
            identity = ModelIdentity(str(source["name"]), str(source["content_hash"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{where} has a corrupt {METADATA_FILE}: {exc}") from exc
        if version != FORMAT_VERSION:
            raise ModelError(f"{where} has {METADATA_FILE} format {version!r}; expected 1")
        return cls(InputSpec.from_json(spec_data), identity)
