"""One exception tree for everything Packrat reports to a user.

Every error a user can cause (a missing file, a batch no plan covers, too many cores) is a
`PackratError`; the CLI prints its message on one line and exits non-zero. Anything else is a bug.
"""

from __future__ import annotations


class PackratError(Exception):
    """Base of every error Packrat raises on purpose."""


class ModelError(PackratError):
    """A model cannot be found, loaded or run (bad path, corrupt file, handler failure)."""


class ProfileError(PackratError):
    """A profile file is missing, corrupt, of an unknown version, or lacks what was asked for."""


class PlanError(PackratError):
    """No plan exists for the request (e.g. a batch no profiled cells can cover in T cores)."""


class TopologyError(PackratError):
    """The CPUs this process may use cannot host what was asked (too many cores, bad core list)."""


class WorkerError(PackratError):
    """A worker process failed: it died, could not start, or its model raised."""
