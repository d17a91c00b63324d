"""What a TorchServe archive says about serving it, applied to its `ModelConfig`.

As in TorchServe, an archive's model-config.yaml wins over the registration's settings:
`batchSize` is the batch the plan is made for (`max_batch_size`), `maxBatchDelay` (ms) how
long a batch may wait to fill, `responseTimeout` (s) how long a worker may take on one batch.
`minWorkers` and `maxWorkers` are ignored with a warning (`read_model_config`): the plan
decides how many instances run. A model registered without a name is served under the
manifest's `modelName`, as TorchServe serves it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from packrat.errors import ModelError

if TYPE_CHECKING:
    from packrat.models.torchserve_source import ArchiveSource
    from packrat.server.repository import ModelConfig

log = logging.getLogger(__name__)


def with_archive_settings(config: ModelConfig, source: ArchiveSource) -> ModelConfig:
    """`config` with the archive's name (unless it names one) and model-config.yaml batch
    settings. Blocking: reads (and on first use extracts) the archive. Raises ModelError for
    settings out of range."""
    settings = source.batch_settings()
    changes: dict[str, Any] = {}
    if config.name is None:
        changes["name"] = source.name
    if settings.batch_size:  # TorchServe's batchSize 0 or unset: the registration's
        changes["max_batch_size"] = settings.batch_size
    if settings.max_batch_delay_ms is not None:
        changes["max_batch_delay_ms"] = float(settings.max_batch_delay_ms)
    if settings.response_timeout_s:
        changes["batch_timeout_s"] = float(settings.response_timeout_s)
    current = {"batch_timeout_s": config.batch_timeout_s, **vars(config.batching)}
    overridden = {
        key: value for key, value in changes.items() if key in current and current[key] != value
    }
    if overridden:
        log.info(
            "%s: %s from the archive's model-config.yaml (it wins over the registration's, as "
            "in TorchServe)",
            changes.get("name", config.name),
            ", ".join(f"{key}={value}" for key, value in overridden.items()),
        )
    try:
        return config.with_flat(changes)
    except ValueError as error:
        raise ModelError(f"the archive's model-config.yaml: {error}") from None
