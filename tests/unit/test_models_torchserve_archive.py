"""Reading TorchServe archives: extraction keyed by hash, manifest, model-config warnings."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import pytest

from packrat.errors import ModelError
from packrat.models.torchserve_archive import (
    batch_settings,
    extract_archive,
    is_archive_dir,
    read_manifest,
    read_model_config,
)

MANIFEST = {
    "createdOn": "03/12/2026 07:00:00",
    "runtime": "python",
    "model": {
        "modelName": "tiny",
        "serializedFile": "tiny.pt",
        "handler": "tiny_handler.py",
        "modelVersion": "1.0",
        "requirementsFile": "requirements.txt",
        "configFile": "model-config.yaml",
    },
    "archiverVersion": "0.12.0",
}
CONFIG = "minWorkers: 1\nmaxWorkers: 4\nbatchSize: 4\nmaxBatchDelay: 50\nresponseTimeout: 120\n"


def _mar(path: Path, config: str = CONFIG) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("MAR-INF/MANIFEST.json", json.dumps(MANIFEST))
        zipped.writestr("tiny_handler.py", "class H: pass\n")
        zipped.writestr("model-config.yaml", config)
        zipped.writestr("requirements.txt", "numpy\n")
    return path


def test_extracts_once_into_a_folder_named_by_the_hash(tmp_path: Path) -> None:
    archive = _mar(tmp_path / "tiny.mar")
    first = extract_archive(archive, tmp_path / "cache")
    assert is_archive_dir(first)
    (first / "marker").write_text("kept")  # a second call must reuse, not re-extract
    assert extract_archive(archive, tmp_path / "cache") == first
    assert (first / "marker").read_text() == "kept"
    other = _mar(tmp_path / "other.mar", config="batchSize: 2\n")
    assert extract_archive(other, tmp_path / "cache") != first


def test_every_extracted_file_reaches_the_disk_before_the_folder_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _mar(tmp_path / "nested.mar")
    with zipfile.ZipFile(archive, "a") as zipped:
        zipped.writestr("code/utils/helpers.py", "X = 1\n")
    synced: list[str] = []
    renamed: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    real_rename = os.rename

    def rename(source: Path, target: Path) -> None:
        renamed.append(str(source))
        real_rename(source, target)

    monkeypatch.setattr("packrat.models.staging.os.fsync", fsync)
    monkeypatch.setattr("packrat.models.torchserve_archive.os.rename", rename)
    folder = extract_archive(archive, tmp_path / "cache")
    with zipfile.ZipFile(archive) as zipped:
        members = sorted(zipped.namelist())
    assert [str(Path(s).relative_to(renamed[0])) for s in sorted(synced)] == members
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == members


def test_manifest_config_and_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = extract_archive(_mar(tmp_path / "tiny.mar"), tmp_path / "cache")
    manifest = read_manifest(folder)
    assert (manifest.model_name, manifest.handler) == ("tiny", "tiny_handler.py")
    assert manifest.serialized_file == "tiny.pt" and manifest.model_file is None
    with caplog.at_level(logging.WARNING):
        config = read_model_config(folder, manifest)
    assert "requirements.txt is not installed" in caplog.text
    assert "minWorkers, maxWorkers ignored" in caplog.text
    settings = batch_settings(config)
    assert (settings.batch_size, settings.max_batch_delay_ms) == (4, 50)
    assert settings.response_timeout_s == 120


def test_refuses_bad_archives(tmp_path: Path) -> None:
    not_zip = tmp_path / "x.mar"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a zip"):
        extract_archive(not_zip, tmp_path / "cache")
    escaping = tmp_path / "escape.mar"
    with zipfile.ZipFile(escaping, "w") as zipped:
        zipped.writestr("../evil.py", "")
    with pytest.raises(ModelError, match="outside"):
        extract_archive(escaping, tmp_path / "cache")
    with pytest.raises(ModelError, match="batchSize"):
        batch_settings({"batchSize": "four"})
    with pytest.raises(ModelError, match="manifest"):
        read_manifest(tmp_path)
