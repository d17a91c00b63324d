"""Triton's perf_analyzer for the tests, installed without root from the package registries.

PyPI's `perf-analyzer` is an empty placeholder; the real binary ships inside the
`tritonclient==2.41.0` wheel (`tritonclient-2.41.0.data/data/bin/perf_analyzer`). It needs
libb64 (Debian's `libb64-0d`) and the CUDA runtime library (`nvidia-cuda-runtime-cu12`'s
wheel: loaded, no GPU used) on LD_LIBRARY_PATH. `install` downloads the two wheels with pip
and the .deb with `apt-get download` (unprivileged; with a private copy of the package lists
if the system's do not know the package), unpacks the three files into a cache directory
once, and never touches the test environment's own tritonclient.

"Cannot install" skips the test; with `PACKRAT_FORBID_SKIPS=1` (CI) that skip is a failure
(tests/conftest.py).
"""

from __future__ import annotations

import os
import platform
import pwd
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TRITONCLIENT = "tritonclient==2.41.0"
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12==12.9.79"
LIBB64 = "libb64-0d"
_BINARY_IN_WHEEL = "tritonclient-2.41.0.data/data/bin/perf_analyzer"
_CUDART_IN_WHEEL = "nvidia/cuda_runtime/lib/libcudart.so.12"
_LIBB64_IN_DEB = "usr/lib/x86_64-linux-gnu/libb64.so.0d"
_DOWNLOAD_TIMEOUT_S = 300.0


class InstallError(Exception):
    """perf_analyzer could not be downloaded or does not run here; the message says why."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """The installed binary and the environment it runs in."""

    binary: Path
    env: dict[str, str] = field(repr=False)  # the whole environment: not for logs

    def run(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """`perf_analyzer ARGS`; its exit code, stdout and stderr (never raises on failure)."""
        return subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def cache_dir() -> Path:
    """Where the tools are kept: under $PACKRAT_CACHE_DIR if set (CI keeps the run's caches
    there), else ~/.cache/packrat-tests."""
    root = os.environ.get("PACKRAT_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "packrat-tests"
    return base / "perf_analyzer-2.41.0"


def install(target: Path | None = None) -> PerfAnalyzer:
    """perf_analyzer from `target` (default `cache_dir()`), downloading it the first time.

    Raises InstallError if it cannot be had here: not Linux x86_64, no network, no pip or
    apt-get, or the binary does not run.
    """
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise InstallError(
            f"the tritonclient 2.41.0 binary is Linux x86_64 only, not "
            f"{sys.platform} {platform.machine()}"
        )
    target = target or cache_dir()
    if not (target / "bin" / "perf_analyzer").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".perf_analyzer-") as tmp:
            staging = Path(tmp) / "tool"
            _download_and_unpack(Path(tmp), staging)
            try:
                staging.rename(target)  # atomic: a concurrent install of the same loses here
            except OSError:
                if not (target / "bin" / "perf_analyzer").is_file():
                    raise
    tool = PerfAnalyzer(target / "bin" / "perf_analyzer", _env(target / "lib"))
    try:
        version = tool.run("--version", timeout_s=30.0)
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = f"{tool.binary} does not run: {exc} (delete {target} to reinstall)"
        raise InstallError(why) from None
    if "Perf Analyzer Version 2.41.0" not in version.stdout + version.stderr:
        raise InstallError(
            f"{tool.binary} does not run (exit {version.returncode}; delete {target} to "
            f"reinstall):\n{version.stdout[-2000:]}{version.stderr[-2000:]}"
        )
    return tool


def install_or_skip() -> PerfAnalyzer:
    """`install`, or skip the calling test with the reason (a failure when
    $PACKRAT_FORBID_SKIPS is 1, as in CI)."""
    try:
        return install()
    except InstallError as exc:
        pytest.skip(f"perf_analyzer is not available: {exc}")


def _download_and_unpack(downloads: Path, staging: Path) -> None:
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(downloads),
            TRITONCLIENT,
            CUDA_RUNTIME,
        ],
        cwd=downloads,
        what="pip download",
    )
    deb = _apt_download(downloads)
    (staging / "bin").mkdir(parents=True)
    (staging / "lib").mkdir()
    _unzip_one(
        _one(downloads, "tritonclient-2.41.0-*.whl"),
        _BINARY_IN_WHEEL,
        staging / "bin" / "perf_analyzer",
    )
    _unzip_one(
        _one(downloads, "nvidia_cuda_runtime_cu12-*.whl"),
        _CUDART_IN_WHEEL,
        staging / "lib" / "libcudart.so.12",
    )
    unpacked = downloads / "deb"
    _run(["dpkg-deb", "-x", str(deb), str(unpacked)], cwd=downloads, what="dpkg-deb -x")
    shutil.copyfile(unpacked / _LIBB64_IN_DEB, staging / "lib" / "libb64.so.0d")
    (staging / "bin" / "perf_analyzer").chmod(0o755)


def _apt_download(downloads: Path) -> Path:
    """Debian's libb64-0d .deb in `downloads`: with the system's package lists, else with a
    private copy fetched by an unprivileged `apt-get update` (a fresh machine may have none)."""
    if shutil.which("apt-get") is None:
        raise InstallError("apt-get is not installed (libb64-0d comes from Debian)")
    try:
        _run(["apt-get", "download", LIBB64], cwd=downloads, what="apt-get download")
    except InstallError:
        state = downloads / "apt"
        (state / "lists" / "partial").mkdir(parents=True)
        (state / "cache" / "archives" / "partial").mkdir(parents=True)
        private = [
            "-o",
            f"Dir::State::Lists={state / 'lists'}",
            "-o",
            f"Dir::Cache={state / 'cache'}",
            "-o",
            "Debug::NoLocking=1",
            # Fetch as whoever runs the tests: apt's own sandbox user cannot write here.
            "-o",
            f"APT::Sandbox::User={pwd.getpwuid(os.getuid()).pw_name}",
        ]
        _run(["apt-get", "-q", *private, "update"], cwd=downloads, what="apt-get update")
        _run(["apt-get", *private, "download", LIBB64], cwd=downloads, what="apt-get download")
    return _one(downloads, f"{LIBB64}_*.deb")


def _run(command: list[str], *, cwd: Path, what: str) -> None:
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        raise InstallError(f"{what} failed (exit {done.returncode}): {done.stderr[-1500:]}")


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise InstallError(f"expected one {pattern} in {folder}, found {len(found)}")
    return found[0]


def _unzip_one(wheel: Path, member: str, destination: Path) -> None:
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(member) as source,
            destination.open("wb") as sink,
        ):
            shutil.copyfileobj(source, sink)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise InstallError(f"{wheel.name} has no {member}: {exc}") from None


def _env(lib: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        part for part in (str(lib), env.get("LD_LIBRARY_PATH", "")) if part
    )
    return env
