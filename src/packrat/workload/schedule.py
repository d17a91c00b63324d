"""When requests are sent: open-loop arrival times, or closed-loop clients. Pure, no I/O but
reading a trace file.

An open-loop schedule fixes every request's send time in advance (offsets in seconds from the
run's start), whatever the server does; a closed-loop schedule has N clients that each send
their next request when the previous reply arrives. Every schedule is checked against `Bounds`
when it is made, so a typo in a rate cannot start a billion requests.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from packrat.errors import PackratError


@dataclass(frozen=True)
class Bounds:
    """The most requests and the longest schedule any run may have."""

    max_requests: int = 1_000_000
    max_duration_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise PackratError(f"max_requests must be >= 1, got {self.max_requests}")
        if not (math.isfinite(self.max_duration_s) and self.max_duration_s > 0):
            raise PackratError(f"max_duration_s must be > 0, got {self.max_duration_s}")

    def check_requests(self, requests: float, what: str) -> None:
        if requests > self.max_requests:
            raise PackratError(
                f"{what} makes {requests:.0f} requests, more than the limit of "
                f"{self.max_requests} (raise --requests-max to allow it)"
            )

    def check_duration(self, duration_s: float, what: str) -> None:
        if duration_s > self.max_duration_s:
            raise PackratError(
                f"{what} lasts {duration_s:g} s, longer than the limit of {self.max_duration_s:g} s"
            )


@dataclass(frozen=True)
class Phase:
    """A named stretch [start_s, end_s) of a run, summarized on its own."""

    name: str
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not (0 <= self.start_s <= self.end_s):
            raise PackratError(
                f"phase {self.name!r} needs 0 <= start_s <= end_s, got {self.start_s}, {self.end_s}"
            )

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, eq=False)
class OpenLoop:
    """Send request i at `arrivals_s[i]` seconds after the start (sorted, >= 0), whatever the
    server does. `phases` tile [0, duration_s]; each arrival belongs to the phase it falls in."""

    arrivals_s: npt.NDArray[np.float64]
    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        a = np.array(self.arrivals_s, dtype=np.float64)  # a copy: the caller's stays writable
        if a.ndim != 1 or not np.all(np.isfinite(a)) or (a.size and a[0] < 0):
            raise PackratError("arrival times must be finite offsets >= 0 s")
        if np.any(np.diff(a) < 0):
            raise PackratError("arrival times must be sorted")
        if not self.phases or self.phases[0].start_s != 0:
            raise PackratError("an open-loop schedule needs phases starting at 0 s")
        for before, after in zip(self.phases, self.phases[1:], strict=False):
            if after.start_s != before.end_s:
                raise PackratError(f"phase {after.name!r} must start where {before.name!r} ends")
        if a.size and a[-1] > self.duration_s:
            raise PackratError(f"arrival at {a[-1]} s is after the last phase's end")
        a.flags.writeable = False
        object.__setattr__(self, "arrivals_s", a)

    @property
    def duration_s(self) -> float:
        return self.phases[-1].end_s

    @property
    def num_requests(self) -> int:
        return int(self.arrivals_s.size)

    def phase_index(self) -> npt.NDArray[np.intp]:
        """For each arrival, the index of its phase (the last one whose start it has reached)."""
        starts = np.array([p.start_s for p in self.phases])
        return np.searchsorted(starts, self.arrivals_s, side="right") - 1


@dataclass(frozen=True)
class ClosedLoop:
    """`concurrency` clients each send back to back until `duration_s` has passed or
    `requests` replies (all clients together) have been asked for, whichever comes first."""

    concurrency: int
    duration_s: float | None = None
    requests: int | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise PackratError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.duration_s is None and self.requests is None:
            raise PackratError("a closed loop needs a duration, a request count, or both")
        if self.duration_s is not None and not (
            math.isfinite(self.duration_s) and self.duration_s > 0
        ):
            raise PackratError(f"duration_s must be > 0, got {self.duration_s}")
        if self.requests is not None and self.requests < 1:
            raise PackratError(f"requests must be >= 1, got {self.requests}")

    @property
    def phase_name(self) -> str:
        return f"closed loop x {self.concurrency}"


Schedule = OpenLoop | ClosedLoop
DEFAULT_BOUNDS = Bounds()


def poisson(
    rate_rps: float, duration_s: float, seed: int = 0, bounds: Bounds = DEFAULT_BOUNDS
) -> OpenLoop:
    """Poisson arrivals at `rate_rps` for `duration_s`, one phase named "poisson @ R rps"."""
    return steps([(rate_rps, duration_s)], seed, bounds, names=[f"poisson @ {rate_rps:g} rps"])


def steps(
    phases: Sequence[tuple[float, float]],
    seed: int = 0,
    bounds: Bounds = DEFAULT_BOUNDS,
    names: Sequence[str] | None = None,
) -> OpenLoop:
    """Poisson arrivals in consecutive phases `[(rate_rps, duration_s), ...]`, named
    "phase i @ R rps" unless `names` are given. One seeded generator draws every phase."""
    if not phases:
        raise PackratError("a step schedule needs at least one (rate_rps, duration_s) phase")
    for i, (rate_rps, duration_s) in enumerate(phases):
        if not (math.isfinite(rate_rps) and rate_rps >= 0):
            raise PackratError(f"phase {i}: rate_rps must be >= 0, got {rate_rps}")
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise PackratError(f"phase {i}: duration_s must be > 0, got {duration_s}")
    what = "the schedule"
    bounds.check_duration(sum(d for _, d in phases), what)
    # Refuse on the expected count first, so nothing huge is ever allocated.
    bounds.check_requests(sum(r * d for r, d in phases), what)
    rng = np.random.default_rng(seed)
    # A Poisson process on [a, b): its count is Poisson(rate * (b - a)), and given the count
    # the times are independent uniforms on [a, b).
    counts = [int(rng.poisson(r * d)) for r, d in phases]
    bounds.check_requests(sum(counts), what)
    chunks: list[npt.NDArray[np.float64]] = []
    made: list[Phase] = []
    start_s = 0.0
    for i, ((rate_rps, duration_s), n) in enumerate(zip(phases, counts, strict=True)):
        end_s = start_s + duration_s
        chunks.append(np.sort(rng.uniform(start_s, end_s, size=n)))
        name = names[i] if names is not None else f"phase {i} @ {rate_rps:g} rps"
        made.append(Phase(name, start_s, end_s))
        start_s = end_s
    return OpenLoop(np.concatenate(chunks), tuple(made))


def parse_steps(text: str) -> list[tuple[float, float]]:
    """ "5:10,40:10" -> [(5.0, 10.0), (40.0, 10.0)]: rate_rps:duration_s pairs."""
    pairs = []
    for item in text.split(","):
        rate, sep, duration = item.partition(":")
        try:
            if not sep:
                raise ValueError
            pairs.append((float(rate), float(duration)))
        except ValueError:
            raise PackratError(
                f"steps must be RATE:SECONDS pairs separated by commas, e.g. 5:10,40:10; "
                f"got {item.strip()!r}"
            ) from None
    return pairs


def from_offsets(
    offsets_s: npt.ArrayLike, name: str = "trace", bounds: Bounds = DEFAULT_BOUNDS
) -> OpenLoop:
    """An open loop replaying given arrival offsets (seconds from the start; sorted here)."""
    arrivals = np.sort(np.asarray(offsets_s, dtype=np.float64).ravel())
    if not np.all(np.isfinite(arrivals)) or (arrivals.size and arrivals[0] < 0):
        raise PackratError(f"{name}: arrival offsets must be finite and >= 0 s")
    bounds.check_requests(arrivals.size, name)
    duration_s = float(arrivals[-1]) if arrivals.size else 0.0
    bounds.check_duration(duration_s, name)
    return OpenLoop(arrivals, (Phase(name, 0.0, duration_s),))


def read_trace(path: Path, bounds: Bounds = DEFAULT_BOUNDS) -> OpenLoop:
    """Arrival offsets from a file: one number of seconds per line (blank lines and `#`
    comments skipped), or a CSV file with a header holding a `t_s` column, or the requests'
    `scheduled_s` column of a CSV written by `packrat loadgen`."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise PackratError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    rows = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    what = f"trace {path}"
    try:
        if rows and not _is_number(rows[0].split(",")[0]):
            reader = csv.DictReader(rows)
            columns = [c for c in ("t_s", "scheduled_s") if c in (reader.fieldnames or [])]
            if not columns:
                raise PackratError(f"{what}: a CSV trace needs a t_s or scheduled_s column")
            values = [float(row[columns[0]]) for row in reader]
        else:
            values = [float(row) for row in rows]
    except ValueError as exc:
        raise PackratError(f"{what}: not a number of seconds ({exc})") from None
    return from_offsets(values, name=what, bounds=bounds)


def check_closed_loop(schedule: ClosedLoop, bounds: Bounds) -> None:
    """Refuse a closed loop asking for more than `bounds` allow."""
    if schedule.duration_s is not None:
        bounds.check_duration(schedule.duration_s, "the closed loop")
    if schedule.requests is not None:
        bounds.check_requests(schedule.requests, "the closed loop")


def check(schedule: Schedule, bounds: Bounds) -> None:
    """Refuse a schedule, however made, that exceeds `bounds`."""
    if isinstance(schedule, ClosedLoop):
        check_closed_loop(schedule, bounds)
    else:
        bounds.check_requests(schedule.num_requests, "the schedule")
        bounds.check_duration(schedule.duration_s, "the schedule")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
