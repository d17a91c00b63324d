"""Read a TorchServe model archive (.mar, or an unpacked folder of the same layout).

The model archiver writes a zip holding the model's files and `MAR-INF/MANIFEST.json`, whose
`model` entry names the serialized weights (`serializedFile`), the handler (a file
`module.py[:function_or_class]` or a built-in name such as `image_classifier`), the model
file, and optionally a `requirementsFile` and a `configFile` (`model-config.yaml`). This
module extracts an archive once into Packrat's cache, in a directory named by the archive's
sha256 (so a changed archive never reuses a stale extraction and an unchanged one is not
unpacked again), and reads the manifest and the model-config's batch settings.

What Packrat does differently from TorchServe is decided here and logged: the archive's
requirements file is never installed (a model archive would otherwise run pip with the
server's permissions), and `minWorkers`/`maxWorkers` are ignored because Packrat's plan
decides how many instances run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packrat.config import cache_dir
from packrat.errors import ModelError
from packrat.models.identity import file_sha256
from packrat.models.staging import sync_tree

log = logging.getLogger(__name__)

MANIFEST_PATH = Path("MAR-INF") / "MANIFEST.json"
ARCHIVE_SUFFIXES = (".mar",)
_WORKER_KEYS = ("minWorkers", "maxWorkers")


@dataclass(frozen=True)
class ArchiveManifest:
    """The `model` part of MANIFEST.json, with the raw manifest kept for `context.manifest`.

    handler: a built-in handler name or `module.py[:entry]`, as the archiver wrote it.
    serialized_file, model_file, requirements_file, config_file: names inside the archive,
        None where the archive has none.
    """

    model_name: str
    handler: str
    serialized_file: str | None
    model_file: str | None
    requirements_file: str | None
    config_file: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class BatchSettings:
    """model-config.yaml's batch settings; None where the file does not set them.

    max_batch_delay_ms and response_timeout_s keep TorchServe's units (maxBatchDelay is in
    milliseconds, responseTimeout in seconds).
    """

    batch_size: int | None = None
    max_batch_delay_ms: int | None = None
    response_timeout_s: int | None = None


def is_archive_dir(path: Path) -> bool:
    """Whether `path` is an unpacked archive (a folder holding MAR-INF/MANIFEST.json)."""
    return path.is_dir() and (path / MANIFEST_PATH).is_file()


def extract_archive(archive: Path, root: Path | None = None) -> Path:
    """The folder holding `archive`'s files, extracted under `root` (default: the cache) once.

    Extraction goes to a temporary folder, flushed to disk and then renamed into place, so a
    concurrent or interrupted extraction, or a crash, never leaves a half-written folder that
    a later start would trust.
    Raises ModelError if the file is not a zip or holds a path outside its folder.
    """
    digest = file_sha256(archive, "model archive")
    base = (root if root is not None else cache_dir() / "archives") / digest
    if (base / MANIFEST_PATH).is_file():
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=base.parent))
    try:
        _unzip(archive, staging)
        sync_tree(staging)  # a handler and its weights: durable before visible
        try:
            os.rename(staging, base)
        except OSError:
            if not (base / MANIFEST_PATH).is_file():  # another process won only if it finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return base


def _unzip(archive: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                resolved = (target / member).resolve()
                if not resolved.is_relative_to(target.resolve()):
                    raise ModelError(
                        f"model archive '{archive}' holds '{member}', outside the archive's "
                        "folder; rebuild it with torch-model-archiver"
                    )
            zipped.extractall(target)
    except zipfile.BadZipFile as error:
        raise ModelError(
            f"model archive '{archive}' is not a zip file ({error}); build it with "
            "torch-model-archiver (not --archive-format tgz) or pass the unpacked folder"
        ) from error


def read_manifest(model_dir: Path) -> ArchiveManifest:
    """Parse `model_dir`/MAR-INF/MANIFEST.json; ModelError if it is missing or has no handler."""
    path = model_dir / MANIFEST_PATH
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(
            f"cannot read the archive manifest {path} ({error}); build the archive with "
            "torch-model-archiver"
        ) from error
    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict) or not model.get("handler"):
        raise ModelError(f"archive manifest {path} has no model.handler; rebuild the archive")
    return ArchiveManifest(
        model_name=str(model.get("modelName") or model_dir.name),
        handler=str(model["handler"]),
        serialized_file=_optional(model, "serializedFile"),
        model_file=_optional(model, "modelFile"),
        requirements_file=_optional(model, "requirementsFile"),
        config_file=_optional(model, "configFile"),
        raw=raw,
    )


def _optional(model: dict[str, Any], key: str) -> str | None:
    value = model.get(key)
    return str(value) if value else None


def read_model_config(model_dir: Path, manifest: ArchiveManifest) -> dict[str, Any]:
    """The archive's model-config.yaml as a dict ({} when it has none), for the handler's
    `context.model_yaml_config`. Warns about the settings Packrat does not honour."""
    if manifest.requirements_file is not None:
        log.warning(
            "%s: the archive's requirements file %s is not installed; install what the "
            "handler needs into Packrat's environment yourself",
            manifest.model_name,
            manifest.requirements_file,
        )
    if manifest.config_file is None:
        return {}
    import yaml  # a dependency of Packrat's torch stack; imported only for archives

    path = model_dir / manifest.config_file
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ModelError(f"cannot read the archive's model config {path}: {error}") from error
    config = loaded if isinstance(loaded, dict) else {}
    ignored = [key for key in _WORKER_KEYS if key in config]
    if ignored:
        log.warning(
            "%s: model-config.yaml's %s ignored: Packrat's plan decides how many instances run",
            manifest.model_name,
            ", ".join(ignored),
        )
    return config


def batch_settings(config: dict[str, Any]) -> BatchSettings:
    """The batch settings of a model-config dict; ModelError naming a key that is not an int."""

    def integer(key: str) -> int | None:
        value = config.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelError(f"model-config.yaml's {key} is {value!r}; give a whole number >= 0")
        return value

    return BatchSettings(
        batch_size=integer("batchSize"),
        max_batch_delay_ms=integer("maxBatchDelay"),
        response_timeout_s=integer("responseTimeout"),
    )
