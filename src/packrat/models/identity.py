"""Content hashes behind `ModelIdentity`: of a model file, or of a canonical JSON description.

A profile is cached under a model's identity, so the hash must change whenever anything that
changes latency changes (the bytes of the file, the architecture config, the input shape), and
must not change otherwise (key order, the path the file was reached by).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from packrat.errors import ModelError
from packrat.models.inputs import InputSpec

# 1 MiB reads keep hashing a multi-GB file at disk speed without holding it in memory.
_CHUNK_BYTES = 1 << 20
_HASHED: dict[tuple[str, int, int, int, int], str] = {}  # see file_sha256


def existing_file(path: Path, what: str) -> Path:
    """`path` if it names a readable regular file; else ModelError("<what> '<path>' ...")."""
    if not path.exists():
        raise ModelError(f"{what} '{path}' does not exist")
    if not path.is_file():
        raise ModelError(f"{what} '{path}' is not a file")
    return path


def file_sha256(path: Path, what: str = "model file") -> str:
    """Hex sha256 of the file's bytes; ModelError if it is missing or unreadable.

    Remembered per process for as long as the file looks unchanged (same device, inode, size
    and modification time): a start-up asks for a model's identity several times (conversion
    per backend, the backend choice, the profile, the shared weights), and a model file can
    be gigabytes."""
    existing_file(path, what)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelError(f"cannot read {what} '{path}': {exc.strerror or exc}") from exc
    key = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    known = _HASHED.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read {what} '{path}': {exc.strerror or exc}") from exc
    _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values always give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def json_sha256(value: Any) -> str:
    """Hex sha256 of `canonical_json(value)`."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


def file_content_hash(path: Path, input_spec: InputSpec | None) -> str:
    """sha256 of a model file, combined with the input spec when one overrides the file's own.

    A different input shape means a different latency profile, so an override must change the
    identity that profiles are cached under.
    """
    file_hash = file_sha256(path)
    if input_spec is None:
        return file_hash
    return json_sha256({"file": file_hash, "input_spec": input_spec.to_json()})
