"""What one request to a tensor model looks like, and how to make valid example requests.

An `InputSpec` describes a single request (one image, one token sequence) without the batch
dimension: `InputSpec((3, 224, 224), "float32")` or `InputSpec((128,), "int64", high=30522)`.
It is a small JSON-serializable value; torch is imported only to build example tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packrat.errors import ModelError

if TYPE_CHECKING:
    import torch

FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
INTEGER_DTYPES = ("int64", "int32", "int16", "int8", "uint8")


@dataclass(frozen=True)
class InputSpec:
    """Shape and dtype of one request, plus the value range of integer requests.

    shape: per-request dimensions, without the batch dimension (may be empty for scalars).
    dtype: a torch dtype name, one of FLOAT_DTYPES or INTEGER_DTYPES.
    low, high: integer requests hold values in [low, high) (e.g. token ids in [0, vocab)).
        For integer dtypes `low` defaults to 0; `high=None` means the upper bound is unknown:
        requests are then not checked against one, and example requests hold `low`
        everywhere, the one value known to be valid. Forbidden for float dtypes, whose example
        values are standard normal.

    Raises ModelError naming the field on construction if any of these is invalid.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    low: int | None = None
    high: int | None = None

    def __post_init__(self) -> None:
        # Normalize lists (from JSON) to a tuple so equal specs compare and hash equal.
        object.__setattr__(self, "shape", tuple(self.shape))
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.shape):
            raise ModelError(f"input shape must be positive integers, got {list(self.shape)}")
        if self.dtype in FLOAT_DTYPES:
            if self.low is not None or self.high is not None:
                raise ModelError(f"input low/high apply to integer dtypes, not {self.dtype}")
        elif self.dtype in INTEGER_DTYPES:
            if self.low is None:
                object.__setattr__(self, "low", 0)
            if self.high is not None and self.high <= (self.low or 0):
                raise ModelError(f"input range [{self.low}, {self.high}) is empty")
        else:
            known = ", ".join(FLOAT_DTYPES + INTEGER_DTYPES)
            raise ModelError(f"input dtype {self.dtype!r} is not supported (use one of {known})")

    @property
    def is_integer(self) -> bool:
        """True for integer dtypes (token ids, class indices)."""
        return self.dtype in INTEGER_DTYPES

    def to_json(self) -> dict[str, Any]:
        """A plain dict that `from_json` turns back into an equal spec."""
        data: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if self.is_integer:
            data["low"] = self.low
            data["high"] = self.high
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputSpec:
        """Parse `to_json` output; raises ModelError if a field is missing or malformed."""
        try:
            shape = data["shape"]
            dtype = data.get("dtype", "float32")
        except (KeyError, TypeError, AttributeError):
            raise ModelError(f"input spec {data!r} lacks a 'shape'") from None
        if not isinstance(shape, list | tuple) or not isinstance(dtype, str):
            raise ModelError(f"input spec {dict(data)!r} is malformed")
        low, high = data.get("low"), data.get("high")
        for value in (low, high):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ModelError(f"input spec low/high must be integers, got {value!r}")
        return cls(shape=tuple(shape), dtype=dtype, low=low, high=high)

    def example_batch(self, batch_size: int, seed: int = 0) -> torch.Tensor:
        """A [batch_size, *shape] tensor of valid inputs; the same for the same seed.

        Uses its own seeded generator, so it neither reads nor advances torch's global RNG.
        """
        import torch

        if batch_size < 1:
            raise ModelError(f"batch_size must be >= 1, got {batch_size}")
        generator = torch.Generator().manual_seed(seed)
        size = (batch_size, *self.shape)
        dtype = getattr(torch, self.dtype)
        if self.is_integer:
            low = self.low or 0
            if self.high is None:
                return torch.full(size, low, dtype=dtype)
            return torch.randint(low, self.high, size, generator=generator, dtype=dtype)
        # randn has no bfloat16/float16 kernels on every CPU build: draw in float32, then cast.
        return torch.randn(size, generator=generator, dtype=torch.float32).to(dtype)

    def example_requests(self, batch_size: int, seed: int = 0) -> list[torch.Tensor]:
        """`batch_size` requests, each a tensor of `shape` that owns its memory.

        Each request is a copy rather than a view of one batch tensor: pickling a view sends its
        whole storage, i.e. the entire batch, to whichever process receives one request.
        """
        return [row.clone() for row in self.example_batch(batch_size, seed).unbind(0)]


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse a CLI shape such as "3,224,224" or "3x224x224" (no batch dimension).

    Raises ModelError if a dimension is not a positive integer.
    """
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ModelError(f"input shape {text!r} is not a list of integers like 3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise ModelError(f"input shape {text!r} must list positive dimensions like 3,224,224")
    return shape


def declared_spec(dims: Sequence[object], dtype: str) -> InputSpec | None:
    """The per-request spec a model file declares for its batch input, if it fixes one.

    dims: the input's declared dimensions, batch first; an int is a fixed size, anything else
        (a symbolic name, None, -1) a dynamic one.
    dtype: a numpy/torch dtype name such as "float32".

    None if any dimension after the batch is dynamic or the dtype is not supported: the user
    must then give the spec (--input-shape, --input-dtype). Integer inputs get the range
    [0, unknown), whose example requests are all zeros, the one value known to be valid.
    """
    if not dims or dtype not in FLOAT_DTYPES + INTEGER_DTYPES:
        return None
    sizes = [d for d in dims[1:] if isinstance(d, int) and not isinstance(d, bool) and d > 0]
    if len(sizes) != len(dims) - 1:
        return None
    return InputSpec(tuple(sizes), dtype)
