"""EngineConfig validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from packrat.pool.config import EngineConfig, default_weights_dir


def test_defaults_are_valid() -> None:
    config = EngineConfig()
    assert config.batch_timeout_s is None
    assert config.share_weights is True
    assert config.resolved_weights_dir() == default_weights_dir()
    assert default_weights_dir().name == "weights"


def test_weights_dir_override() -> None:
    assert EngineConfig(weights_dir=Path("/x")).resolved_weights_dir() == Path("/x")


@pytest.mark.parametrize("field", ["start_timeout_s", "batch_timeout_s", "stop_timeout_s"])
@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, "5", True])
def test_timeouts_must_be_positive_finite_numbers(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"EngineConfig.{field}"):
        EngineConfig(**{field: value})  # type: ignore[arg-type]


def test_weights_dir_must_be_a_path() -> None:
    with pytest.raises(ValueError, match="weights_dir"):
        EngineConfig(weights_dir="/tmp/x")  # type: ignore[arg-type]


def test_share_weights_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="share_weights"):
        EngineConfig(share_weights=1)  # type: ignore[arg-type]
