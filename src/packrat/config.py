"""Settings read from the environment. The only module that reads os.environ.

PACKRAT_CACHE_DIR: where profiles and shared weight files are cached
(default: $XDG_CACHE_HOME/packrat, else ~/.cache/packrat).
PACKRAT_BACKEND: the backend models are served on when none is given (default: auto, the
fastest accurate one; `packrat serve --backend`).
PACKRAT_CGROUP_ROOT: where the cgroup files are read from (default "/"; tests point it at a
fake tree laid out like the real one: proc/self/cgroup, proc/self/mountinfo, the mounts).
PACKRAT_TOKEN: the API token `packrat serve` requires when no token file is given.

(The process also *sets* variables for libraries that read them: HF_HUB_OFFLINE in the CLI,
GRPC_ENABLE_FORK_SUPPORT before grpc loads, the OpenMP/MKL thread counts in each worker.)
"""

from __future__ import annotations

import os
from pathlib import Path


def default_backend() -> str:
    """The backend a model is served on unless told otherwise: $PACKRAT_BACKEND, else auto."""
    return os.environ.get("PACKRAT_BACKEND") or "auto"


def cache_dir() -> Path:
    """Root of Packrat's on-disk cache (not created here)."""
    explicit = os.environ.get("PACKRAT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "packrat"


def cgroup_root() -> Path:
    """The root under which `/proc/self/cgroup`, `/proc/self/mountinfo` and the cgroup mounts
    are read: $PACKRAT_CGROUP_ROOT, else "/"."""
    return Path(os.environ.get("PACKRAT_CGROUP_ROOT") or "/")


TOKEN_ENV = "PACKRAT_TOKEN"


def env_token() -> str | None:
    """$PACKRAT_TOKEN stripped, None if unset or empty (one of only spaces is kept, as "",
    for the caller to refuse rather than serve without a token)."""
    value = os.environ.get(TOKEN_ENV)
    return value.strip() if value else None
