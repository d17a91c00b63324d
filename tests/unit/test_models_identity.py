"""Model identities: stable for the same content, different for different content; picklable."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from packrat.errors import ModelError
from packrat.models import (
    ExportedSource,
    HandlerFileSource,
    InputSpec,
    ModelSource,
    TorchScriptSource,
    ZooSource,
)
from packrat.models.identity import canonical_json, json_sha256

FILE_SOURCES = [TorchScriptSource, ExportedSource, HandlerFileSource]


@pytest.mark.parametrize("kind", FILE_SOURCES)
def test_file_identity_is_name_and_sha256(tmp_path: Path, kind: type[ModelSource]) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"abc")
    identity = kind(path).identity()  # type: ignore[call-arg]
    assert identity.name == "model.bin"
    # sha256("abc"), a published test vector
    assert identity.content_hash == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.parametrize("kind", FILE_SOURCES)
def test_file_identity_follows_content_not_path(tmp_path: Path, kind: type[ModelSource]) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    c.write_bytes(b"other")
    hash_of = {p: kind(p).identity().content_hash for p in (a, b, c)}  # type: ignore[call-arg]
    assert hash_of[a] == hash_of[b] != hash_of[c]
    assert kind(a).identity() == kind(str(a)).identity()  # type: ignore[call-arg]


@pytest.mark.parametrize("kind", FILE_SOURCES)
def test_missing_file_identity_raises(tmp_path: Path, kind: type[ModelSource]) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        kind(tmp_path / "nope").identity()  # type: ignore[call-arg]


def test_input_spec_override_changes_identity(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(b"abc")
    plain = TorchScriptSource(path).identity()
    small = TorchScriptSource(path, InputSpec((3, 32, 32))).identity()
    large = TorchScriptSource(path, InputSpec((3, 64, 64))).identity()
    assert len({plain.content_hash, small.content_hash, large.content_hash}) == 3
    assert small == TorchScriptSource(path, InputSpec((3, 32, 32))).identity()


def test_zoo_identity_is_stable_and_sensitive() -> None:
    base = ZooSource("resnet50").identity()
    assert base == ZooSource("resnet50").identity()
    others = [
        ZooSource("resnet50", seed=1).identity(),
        ZooSource("resnet50", graph_mode=False).identity(),
        ZooSource("tiny-resnet").identity(),
    ]
    assert len({base.content_hash, *(o.content_hash for o in others)}) == 4
    assert len(base.content_hash) == 64


def test_canonical_json_ignores_key_order() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
    assert json_sha256({"b": 1, "a": 2}) == json_sha256({"a": 2, "b": 1})


def test_sources_pickle(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(b"abc")
    sources: list[ModelSource] = [
        ZooSource("tiny-bert", graph_mode=False, seed=7),
        TorchScriptSource(path, InputSpec((4,), "int64", high=9)),
        ExportedSource(tmp_path / "m.pt2"),
        HandlerFileSource(tmp_path / "h.py"),
    ]
    for source in sources:
        copy = pickle.loads(pickle.dumps(source))
        assert type(copy) is type(source)
        assert vars(copy) == vars(source)


def test_file_sources_store_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert TorchScriptSource("m.pt").path == tmp_path / "m.pt"


def test_a_file_is_hashed_once_while_it_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import os

    from packrat.models import identity

    path = tmp_path / "model.pt"
    path.write_bytes(b"a" * 100)
    digests: list[int] = []
    sha256 = hashlib.sha256
    monkeypatch.setattr(identity.hashlib, "sha256", lambda: digests.append(1) or sha256())
    first = identity.file_sha256(path)
    assert identity.file_sha256(path) == first and len(digests) == 1
    # Same size, new bytes, a later modification time: read again.
    path.write_bytes(b"b" * 100)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert identity.file_sha256(path) == sha256(b"b" * 100).hexdigest() != first
    assert len(digests) == 2
