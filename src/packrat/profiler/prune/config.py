"""What a pruned sweep is asked to preserve (`PruneConfig`), the order it offers cells in, the
thread counts its assumption bounds larger ones by (`Scaling`), and a skipped cell (`Skip`)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from packrat.errors import ProfileError

Cell = tuple[int, int]  # (threads, batch)


class Order(enum.Enum):
    """The order cells are offered in. Each row's batch sizes always come smallest first."""

    BATCH_MAJOR = "batch"  # every thread count at the smallest batch, then the next batch
    THREAD_MAJOR = "threads"  # all batch sizes of t = 1, then t = 2: one worker per t


class Scaling(enum.Enum):
    """Which thread counts t' bound the speed-up of larger ones (t L(t, b) >= t' L(t', b)).

    The published GPT-2 and BERT profiles have odd thread counts far slower than their even
    neighbours (GPT-2, b = 2: 3 threads 97 ms, 4 threads 48 ms, 4 x 48 < 0.7 x 3 x 97): from
    every t' the assumption fails by up to 71% there and pruned plans came out wrong. From
    powers of two it fails by at most 17% on the eleven published profiles, and pruning changed
    no optimal plan on any of them (docs/profile-cost.md).
    """

    ONE_THREAD = "one"  # t' = 1 only: the weakest assumption, the least pruning
    POWERS_OF_TWO = "pow2"  # t' in 1, 2, 4, 8, ...
    ANY = "any"  # every t' < t: the most pruning, broken by odd-thread slowdowns

    def sources(self, max_threads: int) -> npt.NDArray[np.bool_]:
        """Mask over t = 1..max_threads of the thread counts that bound larger ones."""
        rows = np.arange(1, max_threads + 1)
        if self is Scaling.ONE_THREAD:
            mask = rows == 1
        elif self is Scaling.POWERS_OF_TWO:
            mask = (rows & (rows - 1)) == 0
        else:
            mask = rows > 0
        out: npt.NDArray[np.bool_] = mask
        return out


class SkipReason(enum.Enum):
    ABOVE_ASKED = "batch above the largest batch size asked for (or its grid neighbour above)"
    NOT_OPTIMAL = "every plan containing it is slower than a plan already measured"


@dataclass(frozen=True)
class PruneConfig:
    """What a pruned sweep must preserve.

    cores: T; thread counts 1..T are swept and plans may use up to T cores.
    batches: the batch grid to profile (e.g. powers of two).
    asked: the batch sizes plans are wanted for (e.g. every B in 1..max_batch_size).
    interpolate: the consumer plans on the profile interpolated between grid batch sizes.
    order: the order cells are offered in (thread-major pruned more on the published profiles,
        and lets a sweep keep one worker per thread count).
    scaling: which thread counts bound the speed-up of larger ones (see `Scaling`).
    tolerance: eps of the assumption (0.02 tolerates 2% super-linear speed-ups).
    adapt: a source pair whose measured cells break the assumption by more than eps bounds
        later decisions with the violation it showed as its tolerance (the module docstring
        says what that guarantees).
    """

    cores: int
    batches: tuple[int, ...]
    asked: tuple[int, ...]
    interpolate: bool = False
    order: Order = Order.THREAD_MAJOR
    scaling: Scaling = Scaling.POWERS_OF_TWO
    tolerance: float = 0.0
    adapt: bool = True

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ProfileError(f"PruneConfig.cores must be >= 1, got {self.cores}")
        for label, values in (("batches", self.batches), ("asked", self.asked)):
            if not values or any(v < 1 for v in values):
                raise ProfileError(f"PruneConfig.{label} must be positive ints, got {values}")
        if list(self.batches) != sorted(set(self.batches)):
            raise ProfileError(f"PruneConfig.batches must be increasing, got {self.batches}")
        if not 0 <= self.tolerance < 1:
            raise ProfileError(f"PruneConfig.tolerance must be in [0, 1), got {self.tolerance}")

    @property
    def threads(self) -> tuple[int, ...]:
        return tuple(range(1, self.cores + 1))

    @property
    def cells(self) -> list[Cell]:
        """Every cell of the full sweep, in the configured order."""
        if self.order is Order.BATCH_MAJOR:
            return [(t, b) for b in self.batches for t in self.threads]
        return [(t, b) for t in self.threads for b in self.batches]


@dataclass(frozen=True)
class Skip:
    """A cell the sweep does not measure, and why.

    For NOT_OPTIMAL: `lower_bound_ms` bounds any plan for `asked_batch` holding the cell or a
    larger batch of its row (the skip takes them all), at the asked batch and piece where the
    margin was smallest, and `best_ms` is the best plan measured for it then.
    """

    threads: int
    batch: int
    reason: SkipReason
    lower_bound_ms: float = math.nan
    best_ms: float = math.nan
    asked_batch: int = 0

    def describe(self) -> str:
        if self.reason is SkipReason.ABOVE_ASKED:
            return f"t={self.threads} b={self.batch}: {self.reason.value}"
        if not math.isfinite(self.lower_bound_ms):
            return f"t={self.threads} b={self.batch}: no plan for an asked batch can hold it"
        return (
            f"t={self.threads} b={self.batch}: any plan with it for B={self.asked_batch} takes "
            f">= {self.lower_bound_ms:.1f} ms, one measured takes {self.best_ms:.1f} ms"
        )
