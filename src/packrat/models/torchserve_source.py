"""A TorchServe model archive (.mar, or its unpacked folder) as a Packrat model source.

The archive's own handler serves it, unchanged (`packrat.models.torchserve_handler`): raw
requests in (`TorchServeRequest`), the handler's answers out exactly as TorchServe writes them
(`TorchServeReply`). Packrat still owns the threads and the cores: each instance of the plan
runs one copy of the handler on its cores, and a batch is split across the instances.

Profiling needs a valid request, which only the user can supply for a handler Packrat cannot
read: `--sample-request FILE` (TorchServe's `curl -T FILE` body), or a file the archive carries
among its extra files, named `sample*` or `example*` (e.g. `--extra-files
sample_request.jpg`), or else its one image file. The file's type, from its suffix, is the
request's content type, so a `.json` sample reaches the handler parsed, as TorchServe's
backend parses JSON bodies.

Nothing here imports torch or TorchServe; the worker imports both when it loads the handler.
"""

from __future__ import annotations

import json
import mimetypes
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.models.identity import existing_file, file_sha256, json_sha256
from packrat.models.torchserve_archive import (
    MANIFEST_PATH,
    ArchiveManifest,
    BatchSettings,
    batch_settings,
    extract_archive,
    read_manifest,
    read_model_config,
)
from packrat.models.torchserve_request import TorchServeRequest, build_request

SAMPLE_PREFIXES = ("sample", "example")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class SampleRequest:
    """A request body for profiling: the file's bytes, sent as TorchServe's `body` parameter
    with the content type its suffix names."""

    path: Path
    content_type: str

    @classmethod
    def from_file(cls, path: Path) -> SampleRequest:
        guessed, _ = mimetypes.guess_type(path.name)
        return cls(path, guessed or "application/octet-stream")

    def requests(self, count: int) -> list[TorchServeRequest]:
        data = self.path.read_bytes()
        headers = {"content-type": self.content_type}
        return [
            build_request([("body", data, self.content_type)], headers, f"sample-{i}")
            for i in range(count)
        ]


class ArchiveSource(ModelSource):
    """A TorchServe archive on local disk: a .mar file or a folder holding MAR-INF/.

    path: the archive; sample_request: a request body file for profiling (default: one the
        archive carries, see the module docstring). Both stored absolute.
    """

    takes_raw_requests = True
    input_spec = None

    def __init__(
        self, path: str | os.PathLike[str], sample_request: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.sample_request = (
            None if sample_request is None else Path(sample_request).expanduser().absolute()
        )
        self.name = _model_name(self.path)

    def identity(self) -> ModelIdentity:
        """The model name and a hash of the archive's bytes (every file of a folder) and of
        the sample request, which profiles are measured on."""
        if self.path.is_dir():
            files = sorted(p for p in self.path.rglob("*") if p.is_file())
            archive = {str(p.relative_to(self.path)): file_sha256(p, "archive file") for p in files}
        else:
            archive = {"": file_sha256(existing_file(self.path, "model archive"), "model archive")}
        sample = None if self.sample_request is None else file_sha256(self.sample_request)
        return ModelIdentity(self.name, json_sha256({"archive": archive, "sample": sample}))

    def model_dir(self) -> Path:
        """The folder holding the archive's files (a .mar is extracted once, into the cache)."""
        if self.path.is_dir():
            return self.path
        return extract_archive(existing_file(self.path, "model archive"))

    def batch_settings(self) -> BatchSettings:
        """The archive's model-config.yaml batch settings (warning about the ones ignored)."""
        model_dir = self.model_dir()
        return batch_settings(read_model_config(model_dir, read_manifest(model_dir)))

    def load(self) -> Handler:
        """The archive's handler behind Packrat's handler interface; TorchServe's loader
        imports and initializes it in `initialize()`, once the worker is pinned."""
        from packrat.models.torchserve_handler import TorchServeHandler

        model_dir = self.model_dir()
        manifest = read_manifest(model_dir)
        sample = self._sample(model_dir, manifest)
        return TorchServeHandler(model_dir, manifest, sample)

    def _sample(self, model_dir: Path, manifest: ArchiveManifest) -> SampleRequest | None:
        if self.sample_request is not None:
            return SampleRequest.from_file(existing_file(self.sample_request, "sample request"))
        found = find_sample(model_dir, manifest)
        return None if found is None else SampleRequest.from_file(found)


def find_sample(model_dir: Path, manifest: ArchiveManifest) -> Path | None:
    """The archive's sample request: a top-level extra file named sample*/example*, else its
    only image file; None if it has neither."""
    own = {
        name
        for name in (
            manifest.serialized_file,
            manifest.model_file,
            manifest.requirements_file,
            manifest.config_file,
            manifest.handler.split(":", 1)[0],
        )
        if name
    }
    extra = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name not in own)
    named = [p for p in extra if p.name.lower().startswith(SAMPLE_PREFIXES)]
    if named:
        return named[0]
    images = [p for p in extra if p.suffix.lower() in IMAGE_SUFFIXES]
    return images[0] if len(images) == 1 else None


def _model_name(path: Path) -> str:
    """The manifest's modelName, read without extracting the archive; the file or folder's
    name when it cannot be read (loading reports why)."""
    try:
        if path.is_dir():
            text = (path / MANIFEST_PATH).read_text()
        else:
            with zipfile.ZipFile(path) as zipped:
                text = zipped.read(MANIFEST_PATH.as_posix()).decode("utf-8")
        name = json.loads(text)["model"]["modelName"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return path.stem
    return str(name) if name else path.stem
