"""The batch-size estimator of the Packrat paper (section 3.8), as a pure policy.

The batch size a server will see follows its load. At every batch the server observes the queue
depth (the requests waiting when the batch is dispatched, the batch included). The estimator
keeps an exponentially weighted moving average of it, rounds that down to a power of two
(capped at the largest batch), and takes the mode of the last `window` such estimates. A new
target batch size is proposed only when that mode differs from the current target and the
last change is at least `cooldown_s` old, so a burst or a lull never makes plans flip-flop.

The defaults smooth lightly (alpha 0.5, no mode window, a 50 ms cool-down): Packrat's switches
take about a millisecond, and on simulated stepped loads (`benchmarks/estimator_defaults.py`,
docs/estimator.md) every longer window or cool-down kept load levels further from their best
fixed plan, up to 2.2x in p99 with a 16-estimate window and a 2 s cool-down: where the
average hovers between two sizes, the cool-down freezes whichever plan it last chose, and
larger batches run on a plan made for smaller ones. Servers whose switches take seconds (the
paper's) want the heavier smoothing, e.g. `alpha=0.25,window=16,cooldown_s=2`.

`EstimatorConfig.per_batch()` turns the smoothing off (every batch proposes its own size), for
servers that should run the optimizer's plan for every batch size as it comes.

No clock, no I/O: the caller passes the time, so the simulator and the server run the same code.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EstimatorConfig:
    """How the estimator smooths the observed queue depth.

    alpha: weight of the newest observation in the moving average, in (0, 1].
    window: how many rounded estimates the mode is taken over (>= 1).
    cooldown_s: least time between two changes of the target, in seconds (>= 0).
    """

    alpha: float = 0.5
    window: int = 1
    cooldown_s: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not (0.0 < self.alpha <= 1.0):
            raise ValueError(f"EstimatorConfig.alpha must be in (0, 1], got {self.alpha!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"EstimatorConfig.window must be an int >= 1, got {self.window!r}")
        if not (math.isfinite(self.cooldown_s) and self.cooldown_s >= 0):
            raise ValueError(
                f"EstimatorConfig.cooldown_s must be a finite number >= 0, got {self.cooldown_s!r}"
            )

    @classmethod
    def parse(cls, text: str) -> EstimatorConfig:
        """Settings written as on the command line, e.g. "alpha=0.5,window=4,cooldown_s=1";
        the ones left out keep their defaults. ValueError naming the bad part."""
        given: dict[str, str] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or key not in _SETTINGS:
                raise ValueError(
                    f"estimator setting {part.strip()!r}: write NAME=VALUE with NAME one of "
                    + ", ".join(_SETTINGS)
                )
            if key in given:
                raise ValueError(f"estimator setting {key} given twice in {text!r}")
            given[key] = value
        default = cls()
        return cls(
            alpha=_number(given, "alpha", default.alpha),
            window=int(_number(given, "window", default.window, integer=True)),
            cooldown_s=_number(given, "cooldown_s", default.cooldown_s),
        )

    def describe(self) -> str:
        """The settings as `parse` reads them."""
        return f"alpha={self.alpha:g},window={self.window},cooldown_s={self.cooldown_s:g}"

    @classmethod
    def per_batch(cls) -> EstimatorConfig:
        """No smoothing: the target is each batch's own size, at once."""
        return cls(alpha=1.0, window=1, cooldown_s=0.0)


_SETTINGS = ("alpha", "window", "cooldown_s")
"""EstimatorConfig's settings, as `EstimatorConfig.parse` names them."""


def _number(given: dict[str, str], key: str, default: float, integer: bool = False) -> float:
    if key not in given:
        return default
    try:
        return int(given[key]) if integer else float(given[key])
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"estimator setting {key} must be {kind}, got {given[key]!r}") from None


@dataclass
class BatchSizeEstimator:
    """Proposes the batch size to plan for, from the queue depth seen at each batch.

    max_batch_size: the largest batch the batcher forms (the estimate never exceeds it).
    target: the batch size the running plan was made for.
    """

    max_batch_size: int
    target: int
    config: EstimatorConfig = field(default_factory=EstimatorConfig)
    _average: float | None = field(default=None, init=False)
    _recent: collections.deque[int] = field(init=False)
    _changed_at_s: float = field(default=-math.inf, init=False)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not 1 <= self.target <= self.max_batch_size:
            raise ValueError(f"target must be in [1, {self.max_batch_size}], got {self.target}")
        self._recent = collections.deque(maxlen=self.config.window)

    @property
    def average(self) -> float | None:
        """The moving average of the queue depth (None before the first observation)."""
        return self._average

    def observe(self, queue_depth: int, now_s: float) -> int | None:
        """Record the queue depth at a batch dispatched at `now_s` (seconds, any monotonic
        clock). Returns the new target batch size if the plan should change now, else None."""
        depth = max(1, queue_depth)
        alpha = self.config.alpha
        self._average = (
            depth if self._average is None else (alpha * depth + (1.0 - alpha) * self._average)
        )
        self._recent.append(round_down_pow2(self._average, self.max_batch_size))
        proposal = _mode(self._recent)
        if proposal == self.target or now_s - self._changed_at_s < self.config.cooldown_s:
            return None
        self.target = proposal
        self._changed_at_s = now_s
        return proposal

    def reset(self, target: int, now_s: float) -> None:
        """The plan was set from outside (pinned, released, cores changed): start over from
        `target`, and let the cool-down run from `now_s`."""
        if not 1 <= target <= self.max_batch_size:
            raise ValueError(f"target must be in [1, {self.max_batch_size}], got {target}")
        self.target = target
        self._average = None
        self._recent.clear()
        self._changed_at_s = now_s


def round_down_pow2(value: float, cap: int) -> int:
    """`cap` if `value` reaches it (the batcher's largest batch, full), else the largest power
    of two <= `value` (at least 1)."""
    if value >= cap:
        return cap
    if value < 2:
        return 1
    return 1 << (int(math.floor(value)).bit_length() - 1)


def _mode(values: collections.deque[int]) -> int:
    """The most frequent value; ties go to the most recent of the tied values."""
    counts = collections.Counter(values)
    best = max(counts.values())
    for value in reversed(values):
        if counts[value] == best:
            return value
    raise ValueError("mode of no values")  # pragma: no cover - never called empty
