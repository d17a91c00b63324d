"""`packrat serve`'s settings: the command line, an optional TOML file and an optional
TorchServe config.properties, merged into one `LaunchConfig`.

A TOML file (`packrat serve --config FILE`) looks like:

    [server]
    host = "127.0.0.1"        # inference and metrics APIs
    port = 8080
    management_host = "127.0.0.1"
    management_port = 8081
    metrics_port = 8082
    metrics_host = "127.0.0.1" # optional; the inference API's host otherwise
    grpc_port = 8001          # the Open Inference Protocol over gRPC, on `host`
    grpc = true               # false: no gRPC server
    model_store = "models"    # model files load from here only
    token_file = "token.txt"  # both APIs need "Authorization: Bearer <its first line>"
    max_batch_size = 8        # defaults for every model (and for management-API registrations)
    max_batch_delay_ms = 0.0  # 0: a batch leaves when the model is free, with what is queued
    max_queue = 100           # requests waiting per model; more get 503 + Retry-After
    max_queue_wait_ms = 2000  # once the queue overflowed, it is held to this much (0: not)
    max_in_flight = 256       # inference requests in progress in all; more get 503 at once
    max_body_bytes = 16777216 # larger request bodies get 413
    metrics_compat = "none"   # "torchserve": TorchServe's ts_* metrics beside Packrat's
    policy = "auto"           # how plans follow the load: "auto", "follow" or "fixed"
    estimator = { alpha = 0.5, window = 1, cooldown_s = 0.05 }  # "follow"'s (the defaults)
    profile_kind = "auto"     # first-start profiles: "auto", "isolated" or "contention"
    batch_timeout_s = 120     # a worker silent this long on a batch is killed and replaced
    backend = "auto"          # "auto" (fastest accurate), "torch", "onnxruntime", "openvino"
    precision = "auto"        # "auto" (bf16 where native), "fp32", "bf16"
    chunks = true             # instances may run their share in chunks where that is faster
    calibrate = true          # served batches correct profile cells they keep far from
    max_workers = 32          # OpenVINO's workers per model at most (default: 2 x its cores)

    [[models]]
    spec = "resnet50"         # a zoo name or a file
    name = "resnet"           # optional; the served name
    cores = [0, 1]            # optional CPU ids; default: every usable core
    max_batch_size = 16
    plan = "<2,1,8>"          # optional pinned plan; or fat = true
    policy = "follow"         # optional; the [server] policy otherwise
    estimator = { alpha = 0.25, window = 16 }  # optional; the [server] estimator otherwise
    backend = "openvino"      # optional; the [server] backend (and precision) otherwise
    chunks = false            # optional; the [server] chunks otherwise
    calibrate = false         # optional; the [server] calibrate otherwise
    max_workers = 8           # optional; the [server] max_workers otherwise
    batch_timeout_s = 60      # optional; the [server] batch_timeout_s otherwise
    sample_request = "kitten.jpg"  # optional; a TorchServe archive's profiling request

Command-line options given explicitly override the file's [server] values; models named on the
command line are served in addition to the file's. A TorchServe config.properties
(`--ts-config`, `packrat.server.ts_config`) sits between the two: its settings override the
TOML file's (`with_ts_settings`) and the command line overrides them; its models are added
last (`with_ts_models`), with the server-wide settings the command line left.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from packrat.config import default_backend
from packrat.controller.batching import BATCHING_KEYS, BatchingConfig, without_batching
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.plan_choice import PlanChoice
from packrat.controller.policy import PolicyKind
from packrat.errors import PackratError
from packrat.profiler.contention import ProfileKindSetting
from packrat.server.http_config import HttpConfig
from packrat.server.listen import Listener
from packrat.server.repository import ModelConfig
from packrat.server.ts_config import METRICS_COMPAT, TorchServeConfig


@dataclass(frozen=True)
class LaunchConfig:
    """Everything `packrat serve` needs; see the module docstring for the file format."""

    host: str = "127.0.0.1"
    port: int = 8080
    management_host: str = "127.0.0.1"
    management_port: int = 8081
    metrics_port: int = 8082
    metrics_host: str | None = None  # None: the inference API's host
    grpc_port: int = 8001  # KServe v2 over gRPC, on `host` (Triton's port)
    grpc: bool = True  # False: no gRPC server
    model_store: Path | None = None
    token_file: Path | None = None  # the API token; else $PACKRAT_TOKEN; else no token
    batching: BatchingConfig = field(default_factory=BatchingConfig)  # models' unless their own
    max_in_flight: int = 256  # inference requests in progress, all models; more get 503
    max_body_bytes: int = HttpConfig.max_body_bytes  # larger request bodies get 413
    metrics_compat: str = "none"  # "torchserve": TorchServe's metric names beside Packrat's
    cores: int | None = None  # first N usable cores for models without their own
    keep_freed_memory: bool = True
    policy: PolicyKind = PolicyKind.AUTO  # for models whose config names none
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)  # for "follow"
    profile_kind: ProfileKindSetting = ProfileKindSetting.AUTO  # how first starts profile
    batch_timeout_s: float = 120.0  # a worker silent this long on a batch is replaced
    backend: str = field(default_factory=default_backend)  # auto, torch, onnxruntime, openvino
    precision: str = "auto"  # auto, fp32, bf16
    chunks: bool = True  # instances may run their share in chunks where that is faster
    calibrate: bool = True  # served batches correct the profile where they keep far from it
    max_workers: int | None = None  # per model whose workers cannot move; None: 2 x its cores
    models: tuple[ModelConfig, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("port", "management_port", "metrics_port", "grpc_port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise PackratError(f"{name} must be a port number 0..65535, got {value!r}")
        for name in ("max_in_flight", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PackratError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("grpc", "chunks", "calibrate"):
            if not isinstance(getattr(self, name), bool):
                raise PackratError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("host", "management_host"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise PackratError(
                    f"{name} must be a host name or address, got {getattr(self, name)!r}"
                )
        if isinstance(self.batch_timeout_s, bool) or not (
            isinstance(self.batch_timeout_s, int | float) and self.batch_timeout_s > 0
        ):
            raise PackratError(
                "batch_timeout_s must be a positive number of seconds, "
                f"got {self.batch_timeout_s!r}"
            )
        if self.cores is not None and (
            isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1
        ):
            raise PackratError(f"cores must be a positive number of cores, got {self.cores!r}")
        most = self.max_workers
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise PackratError(f"max_workers must be an integer >= 1, got {most!r}")
        for name, kind in (("policy", PolicyKind), ("profile_kind", ProfileKindSetting)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise PackratError(f"{name} must be a {kind.__name__}, got {value!r}")
        if self.metrics_compat not in METRICS_COMPAT_CHOICES:
            choices = ", ".join(METRICS_COMPAT_CHOICES)
            raise PackratError(
                f"unknown metrics_compat {self.metrics_compat!r}: choose one of {choices}"
            )

    def listeners(self) -> list[Listener]:
        return [
            Listener("inference", self.host, self.port),
            Listener("management", self.management_host, self.management_port),
            Listener("metrics", self.metrics_host or self.host, self.metrics_port),
        ]


METRICS_COMPAT_CHOICES = ("none", METRICS_COMPAT)

_SERVER_KEYS = {f.name for f in fields(LaunchConfig)} - {"models", "batching"} | {*BATCHING_KEYS}
_CHOICE_KEYS = {"plan", "fat", "policy"}
_MODEL_KEYS = {f.name for f in fields(ModelConfig)} - {"batching", "choice"} | {
    *BATCHING_KEYS,
    *_CHOICE_KEYS,
}
"""The keys of [server] and of [[models]] entries: the fields, with the batching as flat keys
and a model's plan choice as plan, fat and policy (`PlanChoice.from_options`)."""


def load_config_file(path: Path) -> LaunchConfig:
    """Parse a TOML launch file; PackratError naming the file and the bad key or value."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise PackratError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PackratError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"server", "models"}
    if unknown:
        raise PackratError(
            f"{path}: unknown section(s) {sorted(unknown)}; use [server], [[models]]"
        )
    server = dict(data.get("server", {}))
    bad = set(server) - _SERVER_KEYS
    if bad:
        raise PackratError(f"{path}: unknown [server] key(s) {sorted(bad)}")
    for key in ("model_store", "token_file"):
        if key in server:
            server[key] = (path.parent / str(server[key])).resolve()
    try:
        if "estimator" in server:
            server["estimator"] = _estimator(server["estimator"])
        settings = _settings(server, BatchingConfig())
    except (TypeError, ValueError) as exc:
        raise PackratError(f"{path}: [server] {exc}") from None
    inherited = {k: server[k] for k in _INHERITED if k in server}
    models = tuple(
        _model(entry, path, i, inherited, settings["batching"])
        for i, entry in enumerate(data.get("models", []))
    )
    try:
        return LaunchConfig(**settings, models=models)
    except TypeError as exc:
        raise PackratError(f"{path}: {exc}") from None


def _settings(flat: Mapping[str, Any], batching: BatchingConfig) -> dict[str, Any]:
    """LaunchConfig field values from flat settings ([server], the command line,
    config.properties): the batching keys given over `batching`, the policy and profile kind
    parsed from their names. ValueError naming the key or the choices."""
    settings = without_batching(flat) | {"batching": batching.with_flat(flat, owner="")}
    if "policy" in settings:
        settings["policy"] = PolicyKind.parse(str(settings["policy"]))
    if "profile_kind" in settings:
        settings["profile_kind"] = ProfileKindSetting.parse(str(settings["profile_kind"]))
    return settings


_INHERITED = ("estimator", "backend", "precision", "chunks", "calibrate", "max_workers")
"""[server] keys that are defaults for the [[models]] entries that do not set them, besides
the batching keys (an entry's batching keys are read over [server]'s batching)."""


def _model(
    entry: Any, path: Path, index: int, inherited: dict[str, Any], batching: BatchingConfig
) -> ModelConfig:
    where = f"{path}: [[models]] entry {index + 1}"
    if not isinstance(entry, dict):
        raise PackratError(f"{where} is not a table")
    bad = set(entry) - _MODEL_KEYS
    if bad:
        raise PackratError(f"{where}: unknown key(s) {sorted(bad)}")
    values = inherited | {k: v for k, v in entry.items() if k not in _CHOICE_KEYS}
    plan, policy = entry.get("plan"), entry.get("policy")
    try:
        values["choice"] = PlanChoice.from_options(
            None if plan is None else str(plan),
            bool(entry.get("fat", False)),
            None if policy is None else str(policy),
        )
        for key in ("profile", "sample_request"):  # relative to the file
            if key in values:
                values[key] = (path.parent / str(values[key])).resolve()
        if "cores" in values:
            values["cores"] = tuple(int(c) for c in values["cores"])
        if "estimator" in values:
            values["estimator"] = _estimator(values["estimator"])
        return ModelConfig.from_flat(values, batching)
    except (TypeError, ValueError) as exc:
        raise PackratError(f"{where}: {exc}") from None


def _estimator(value: Any) -> EstimatorConfig:
    """The estimator's settings from a TOML table (or already read, when inherited)."""
    if isinstance(value, EstimatorConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError("estimator must be a table: { alpha = ..., window = ..., ... }")
    return EstimatorConfig(**value)


def with_cli(base: LaunchConfig, models: list[str], **overrides: Any) -> LaunchConfig:
    """`base` with the options given on the command line (None = not given) and the models
    named there, each with the server-wide batching settings and the pinned plan options."""
    given = {k: v for k, v in overrides.items() if v is not None and k in _SERVER_KEYS}
    if isinstance(given.get("estimator"), str):
        try:
            given["estimator"] = EstimatorConfig.parse(given["estimator"])
        except ValueError as exc:
            raise PackratError(f"--estimator: {exc}") from None
    try:
        config = replace(base, **_settings(given, base.batching))
    except ValueError as exc:
        raise PackratError(str(exc)) from None
    per_model: dict[str, Any] = model_defaults(config) | {
        "batching": config.batching,
        "profile": overrides.get("profile"),
        "sample_request": overrides.get("sample_request"),
    }
    for key in ("profile", "sample_request"):
        if per_model[key] is not None and len(models) + len(config.models) != 1:
            option = "--" + key.replace("_", "-")
            raise PackratError(
                f"{option} applies to one model; use [[models]] in --config for more"
            )
    try:
        per_model["choice"] = PlanChoice.from_options(
            overrides.get("plan"), bool(overrides.get("fat"))
        )
        extra = tuple(
            ModelConfig(spec=spec, name=name, **per_model)
            for name, spec in (named_spec(model) for model in models)
        )
    except ValueError as exc:
        raise PackratError(str(exc)) from None
    return replace(config, models=config.models + extra)


def model_defaults(config: LaunchConfig) -> dict[str, Any]:
    """The server-wide settings a model started by name, or registered through the management
    API (`RepositoryDefaults`), gets unless it sets its own, besides `config.batching`."""
    return {key: getattr(config, key) for key in _INHERITED}


def with_ts_settings(base: LaunchConfig, ts: TorchServeConfig) -> LaunchConfig:
    """`base` (e.g. from --config) with a TorchServe config.properties' server settings."""
    try:
        return replace(base, **_settings(ts.server, base.batching))
    except (TypeError, ValueError) as exc:
        raise PackratError(f"TorchServe config: {exc}") from None


_NAMED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,127})=(.+)$")


def named_spec(model: str) -> tuple[str | None, str]:
    """A model argument as (served name, spec): `NAME=SPEC` serves SPEC under NAME (as
    `torchserve --models name=file.mar` and KServe's `{{.Name}}=/mnt/models`), anything else
    is a spec served under its own name. A path that exists is always a spec, `=` or not."""
    match = _NAMED.match(model)
    if match is None or Path(model).exists():
        return None, model
    return match.group(1), match.group(2)


def with_ts_models(config: LaunchConfig, ts: TorchServeConfig) -> LaunchConfig:
    """`config` with the models a config.properties loads (load_models), each with its own
    `models` settings over `config`'s server-wide ones (after the command line's)."""
    defaults = model_defaults(config)
    try:
        extra = tuple(
            ModelConfig.from_flat(
                {"spec": entry.spec, "name": entry.name, "version": entry.version}
                | defaults
                | dict(entry.settings),
                config.batching,
            )
            for entry in ts.models
        )
    except ValueError as exc:
        raise PackratError(f"TorchServe config: {exc}") from None
    return replace(config, models=config.models + extra)
