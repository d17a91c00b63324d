"""Where profiles are cached (keyed by model content hash, machine and torch version), and
which cached profile may be planned with or resumed."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from packrat.config import cache_dir
from packrat.errors import ProfileError
from packrat.models.base import ModelIdentity
from packrat.profiler.profile_file import Profile, load_profile, outdated
from packrat.profiler.sweep import torch_version
from packrat.topology import Topology, machine_info

logger = logging.getLogger(__name__)


def machine_key(topology: Topology) -> str:
    """A short stable key for the CPU model and the cores this process may use."""
    info = machine_info(topology).to_json()
    blob = json.dumps(
        {k: info.get(k) for k in ("cpu_model", "usable_cores", "sockets", "smt")}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def default_profile_path(
    identity: ModelIdentity,
    topology: Topology,
    *,
    keep_freed_memory: bool = True,
    contention: bool = False,
) -> Path:
    """`<cache>/profiles/<model>-<hash12>-<machine>-torch<version>[-release][-contention].json`.

    `-release` marks profiles measured with glibc's default malloc (workers that release
    freed memory), which are slower and must not be mixed with the default ones;
    `-contention` profiles measured with neighbours (`packrat profile --contention`).
    """
    digest = identity.content_hash.split(":")[-1][:12]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", identity.name)
    version = re.sub(r"[^A-Za-z0-9_.-]", "_", torch_version())
    tag = ("" if keep_freed_memory else "-release") + ("-contention" if contention else "")
    stem = f"{name}-{digest}-{machine_key(topology)}-torch{version}{tag}"
    return cache_dir() / "profiles" / f"{stem}.json"


def cached_profile(path: Path) -> Profile | None:
    """The profile cached at `path`, to plan with or to resume; None if there is none, or (with
    a warning saying why) if it cannot be read or an older Packrat measured it by a method
    since changed: where a profile is needed, it is then measured afresh and overwritten."""
    if not path.is_file():
        return None
    try:
        profile = load_profile(path)
    except ProfileError as exc:
        logger.warning("ignoring unreadable cached profile: %s", exc)
        return None
    why = outdated(profile)
    if why is not None:
        logger.warning("ignoring the cached profile %s: %s", path, why)
        return None
    return profile
