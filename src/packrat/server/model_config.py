"""How to serve one model version (`ModelConfig`), and the settings of models registered by
spec alone (`RepositoryDefaults`): frozen, checked on construction, with errors naming the
field. The CLI, the TOML configuration and the management API all make these."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packrat.config import default_backend
from packrat.controller.batching import BatchingConfig, without_batching
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.kept_layouts import LAYOUTS_PER_CORE
from packrat.controller.plan_choice import ChoiceKind, PlanChoice
from packrat.errors import PackratError
from packrat.profiler.backend_select import candidates

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""A valid model name or version: safe in URL paths and file names."""


@dataclass(frozen=True)
class ModelConfig:
    """How to serve one model version.

    spec: a zoo name or a model file (`packrat.server.model_setup` says where files may be).
    name: the served name; None takes the zoo name or the file's stem. version: its version.
    cores: CPU ids the model's instances run on; None means every CPU this process may use.
    batching: dynamic batching and its admission bounds (`BatchingConfig`; the TOML file,
        the command line and registrations spell its fields as flat keys, `BATCHING_KEYS`);
        its max_batch_size is also the batch the plan is made for.
    profile: a profile file (JSON or published CSV) to plan with instead of the cache.
    choice: the model's first plan (`PlanChoice`): a plan pinned instead of the optimal one
        (allocated on `cores` if it has no cores yet), the fat instance (one instance, all
        cores), or how the plan follows the load: AUTO runs each batch on the optimal plan
        for its size, FOLLOW on the plan for the batch size the estimator sees (with
        `estimator`'s settings), FIXED always on the plan for max_batch_size. None takes the
        repository's (`RepositoryDefaults.choice`). The TOML file and the command line spell
        it plan, fat and policy (`PlanChoice.from_options`).
    backend, precision: what the instances run on (`packrat.profiler.backend_select`):
        "auto" (default: $PACKRAT_BACKEND, else auto) serves on the fastest backend whose
        answers match torch's fp32 ones, or a backend by name (torch, onnxruntime,
        openvino); precision "auto" allows bf16 where the CPU runs it natively, "fp32"
        keeps exact fp32, "bf16" asks for it (within the error budget).
    chunks: whether instances may run their share of a batch as consecutive chunks where the
        profile says that is faster (`profiler.backend_plan.with_chunks`); False runs every
        share whole, as the paper's plans do.
    calibrate: whether served batches correct the profile where they keep running far from
        it, and the model plans on the corrected cells (`packrat.server.calibrating`).
    batch_timeout_s: seconds a worker may take on one batch before it is replaced (its
        requests get 503); None: the server's (`EngineConfig.batch_timeout_s`). TorchServe's
        responseTimeout.
    sample_request: a request body file to profile a TorchServe archive with (default: the
        one the archive carries; see `packrat.models.torchserve_source`).
    max_workers: for a model whose workers cannot move (OpenVINO's, or a mix holding it: one
        worker, with its own copy of the weights, per (threads, cores) of its plans), the
        most workers it keeps; where its optimal plans need more, each batch runs on the
        fastest plan the kept ones can run (`controller.kept_layouts`). None: twice its
        cores (`default_max_workers`). Workers that move are never more than the cores.

    A TorchServe archive's model-config.yaml sets batch_size, max_batch_delay_ms and
    batch_timeout_s over these, as in TorchServe (`packrat.server.archive_settings`).
    """

    spec: str
    name: str | None = None
    version: str = "1"
    cores: tuple[int, ...] | None = None
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    profile: Path | None = None
    choice: PlanChoice | None = None
    estimator: EstimatorConfig = dataclasses.field(default_factory=EstimatorConfig)
    backend: str = dataclasses.field(default_factory=default_backend)
    precision: str = "auto"
    chunks: bool = True
    calibrate: bool = True
    batch_timeout_s: float | None = None
    sample_request: Path | None = None
    max_workers: int | None = None

    def __post_init__(self) -> None:
        if not self.spec:
            raise ValueError("ModelConfig.spec must name a zoo model or a file, got ''")
        for field_name in ("name", "version"):
            value = getattr(self, field_name)
            if value is not None and not MODEL_NAME.match(value):
                raise ValueError(
                    f"ModelConfig.{field_name} must be 1-128 letters, digits, '_', '.' or '-' "
                    f"(not starting with '_', '.' or '-'), got {value!r}"
                )
        if self.cores is not None:
            object.__setattr__(self, "cores", tuple(self.cores))
            if not self.cores or any(c < 0 for c in self.cores):
                raise ValueError(
                    f"ModelConfig.cores must be a non-empty list of CPU ids, got {self.cores}"
                )
            if len(set(self.cores)) != len(self.cores):
                raise ValueError(f"ModelConfig.cores has repeated CPU ids: {list(self.cores)}")
        if not isinstance(self.batching, BatchingConfig):
            raise ValueError(
                f"ModelConfig.batching must be a BatchingConfig, got {self.batching!r}"
            )
        try:
            candidates(self.backend, self.precision, bf16_native=True)
        except PackratError as exc:
            raise ValueError(f"ModelConfig: {exc}") from None
        for flag in ("chunks", "calibrate"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(
                    f"ModelConfig.{flag} must be true or false, got {getattr(self, flag)!r}"
                )
        timeout = self.batch_timeout_s
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise ValueError(
                f"ModelConfig.batch_timeout_s must be a positive number of seconds, got {timeout!r}"
            )
        most = self.max_workers
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise ValueError(f"ModelConfig.max_workers must be an integer >= 1, got {most!r}")
        if self.choice is not None and not isinstance(self.choice, PlanChoice):
            raise ValueError(f"ModelConfig.choice must be a PlanChoice, got {self.choice!r}")

    @classmethod
    def from_flat(
        cls, settings: Mapping[str, Any], batching: BatchingConfig | None = None
    ) -> ModelConfig:
        """A config from `settings`: field values, with the batching spelled as flat keys
        (`BATCHING_KEYS`) over `batching` (default `BatchingConfig()`), as TOML [[models]]
        entries and config.properties' models give it. ValueError naming the field or key."""
        flat = (batching or BatchingConfig()).with_flat(settings, "ModelConfig")
        return cls(batching=flat, **without_batching(settings))

    def with_flat(self, settings: Mapping[str, Any]) -> ModelConfig:
        """This config with `settings` over it, the batching spelled as flat keys (as
        `from_flat`): a registration's options, an archive's model-config.yaml."""
        batching = self.batching.with_flat(settings, "ModelConfig")
        return dataclasses.replace(self, batching=batching, **without_batching(settings))


def default_max_workers(cores: int) -> int:
    """The most workers a model whose workers cannot move keeps on `cores` cores, unless its
    config says (`ModelConfig.max_workers`): `LAYOUTS_PER_CORE` per core."""
    return LAYOUTS_PER_CORE * cores


@dataclass(frozen=True)
class RepositoryDefaults:
    """Settings for models registered by spec alone (`Repository.register`, the HTTP API):
    the server's, as `packrat serve` was started (`launch_config.model_defaults`), each as
    `ModelConfig`'s field of that name; `choice` also for models whose config names none (by
    default AUTO)."""

    cores: tuple[int, ...] | None = None
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    choice: PlanChoice = PlanChoice(ChoiceKind.AUTO)
    estimator: EstimatorConfig = dataclasses.field(default_factory=EstimatorConfig)
    backend: str = dataclasses.field(default_factory=default_backend)
    precision: str = "auto"
    chunks: bool = True
    calibrate: bool = True
    max_workers: int | None = None

    def __post_init__(self) -> None:
        try:
            self.model_config("defaults")
        except ValueError as exc:
            raise ValueError(str(exc).replace("ModelConfig.", "RepositoryDefaults.")) from None

    def model_config(self, spec: str, name: str | None = None) -> ModelConfig:
        return ModelConfig(
            spec=spec,
            name=name,
            cores=self.cores,
            batching=self.batching,
            choice=self.choice,
            estimator=self.estimator,
            backend=self.backend,
            precision=self.precision,
            chunks=self.chunks,
            calibrate=self.calibrate,
            max_workers=self.max_workers,
        )
