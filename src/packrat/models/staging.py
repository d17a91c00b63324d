"""Folders written in the cache beside their final place, then renamed into it.

A rename is atomic, but not durable by itself: after a crash the renamed folder may hold files
whose data never reached the disk (zeros, or nothing), which a later start would trust. So
every file is flushed first: `sync_files` for the conversions and ONNX Runtime's optimized
copies (files side by side), `sync_tree` for an extracted TorchServe archive (folders inside).
"""

from __future__ import annotations

import os
from pathlib import Path


def sync_files(folder: Path) -> None:
    """Flush every file directly in `folder` to disk. Raises OSError if one cannot be."""
    for path in folder.iterdir():
        with path.open("rb") as file:
            os.fsync(file.fileno())


def sync_tree(folder: Path) -> None:
    """Flush every file under `folder`, at any depth, to disk. Raises OSError if one cannot be."""
    for directory, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(directory, name), "rb") as file:
                os.fsync(file.fileno())
