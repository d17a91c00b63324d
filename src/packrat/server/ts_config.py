"""TorchServe's config.properties, read as Packrat settings (`packrat serve --ts-config`).

So that a TorchServe deployment moves over with its config file: each key TorchServe reads
(`ConfigManager`, 0.12) either maps onto a Packrat setting or is ignored with one warning
line naming it and why; a key TorchServe does not know gets a warning too. docs/
torchserve-config.md lists every key.

Mapped: inference_address, management_address, metrics_address (`http://host:port`; https
is refused: Packrat serves plain HTTP), model_store, load_models (`all`, `standalone`, or
comma-separated `file` / `name=file` entries, each a file in the model store or a zoo name),
models (per model and version: batchSize, maxBatchDelay, responseTimeout; defaultVersion
picks the version served when several are given), job_queue_size (the per-model queue),
default_response_timeout (seconds a worker may take on a batch), max_request_size (largest
body), metrics_mode (prometheus or legacy: TorchServe's metric names beside Packrat's).

The result holds server settings (`LaunchConfig` field names) and models to load; the
server-wide batching settings are filled in later (`model_configs`), after the command
line's flags, which win over the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packrat.errors import PackratError
from packrat.server.properties import duplicates, parse_properties

METRICS_COMPAT = "torchserve"
"""`LaunchConfig.metrics_compat` for TorchServe's metric names (`metrics_mode=prometheus`)."""

_MODEL_SUFFIXES = (".mar", ".pt", ".ts", ".torchscript", ".pt2", ".py", ".onnx", ".xml")
"""Files `load_models=all` loads from the model store (with archive folders)."""

_NOT_TS_GRPC = (
    "TorchServe's own gRPC API is not served; Packrat serves KServe v2 over gRPC (--grpc-port)"
)
_IGNORED = {
    "default_workers_per_model": "the plan decides how many instances run",
    "number_of_netty_threads": "the HTTP front end is one asyncio event loop",
    "netty_client_threads": "the HTTP front end is one asyncio event loop",
    "async_logging": "Packrat logs to stderr",
    "default_startup_timeout": "workers have their own start timeout",
    "unregister_model_timeout": "unregistering drains the model's queue first",
    "decode_input_request": "request bodies are decoded by content type",
    "initial_worker_port": "workers talk over pipes, not ports",
    "initial_distribution_port": "workers talk over pipes, not ports",
    "model_server_home": "not needed",
    "max_response_size": "answers are not limited in size",
    "limit_max_image_pixels": "images are limited to 40 million pixels",
    "allowed_urls": "Packrat never downloads models: only files in the model store load",
    "use_env_allowed_urls": "Packrat never downloads models",
    "workflow_store": "workflows are not supported",
    "disable_system_metrics": "no system metrics are collected",
    "system_metrics_cmd": "no system metrics are collected",
    "metric_time_interval": "no system metrics are collected",
    "metrics_config": "metrics are fixed (see docs/torchserve-config.md)",
    "model_metrics_auto_detect": "handlers do not emit metrics",
    "number_of_gpu": "Packrat runs on CPUs",
    "ipex_enable": "backends are chosen per model (--backend)",
    "ipex_gpu_enable": "Packrat runs on CPUs",
    "cpu_launcher_enable": "Packrat pins its own workers to cores",
    "cpu_launcher_args": "Packrat pins its own workers to cores",
    "blacklist_env_vars": "workers inherit the server's environment",
    "install_py_dep_per_model": "install dependencies in the server's environment",
    "prefer_direct_buffer": "a JVM setting",
    "vmargs": "a JVM setting",
    "cors_allowed_origin": "CORS is not supported",
    "cors_allowed_methods": "CORS is not supported",
    "cors_allowed_headers": "CORS is not supported",
    "keystore": "TLS is not supported: terminate it in a proxy",
    "keystore_pass": "TLS is not supported: terminate it in a proxy",
    "keystore_type": "TLS is not supported: terminate it in a proxy",
    "certificate_file": "TLS is not supported: terminate it in a proxy",
    "private_key_file": "TLS is not supported: terminate it in a proxy",
    "enable_grpc_ssl": "TLS is not supported",
    "grpc_inference_address": _NOT_TS_GRPC,
    "grpc_management_address": _NOT_TS_GRPC,
    "grpc_inference_port": _NOT_TS_GRPC,
    "grpc_management_port": _NOT_TS_GRPC,
    "grpc_inference_max_connection_age_ms": "not configurable",
    "grpc_management_max_connection_age_ms": "not configurable",
    "grpc_inference_max_connection_age_grace_ms": "not configurable",
    "grpc_management_max_connection_age_grace_ms": "not configurable",
    "enable_metrics_api": "the metrics API always runs (--metrics-port)",
    "enable_envvars_config": "settings come from the files and the command line",
    "model_snapshot": "snapshots are not kept",
    "enable_model_api": "the management API can always register models (--token-file protects it)",
    "disable_token_authorization": "a token is required only with --token-file or $PACKRAT_TOKEN",
    "token_expiration_min": "the API token does not expire",
    "ts_open_inference_protocol": "the Open Inference Protocol (v2) is always served",
    "use_native_io": "not used",
    "io_ratio": "not used",
    "debug": "not used",
    "default_service_handler": "models bring their handler",
    "service_envelope": "bodies are decoded by content type",
    "cpp_log_config": "not used",
    "ts_header_key_sequence_id": "sequence batching is not supported",
    "ts_header_key_sequence_start": "sequence batching is not supported",
    "ts_header_key_sequence_end": "sequence batching is not supported",
    "version": "not used",
    "tsConfigFile": "not used",
}
"""TorchServe's keys with no meaning here, and why."""

_MODEL_PARAMS_IGNORED = {
    "minWorkers": "the plan decides how many instances run",
    "maxWorkers": "the plan decides how many instances run",
    "startupTimeout": "workers have their own start timeout",
    "marName": "the file comes from load_models",
    "deviceType": "Packrat runs on CPUs",
    "deviceIds": "Packrat runs on CPUs",
    "parallelType": "the plan decides how instances split a batch",
    "parallelLevel": "the plan decides how instances split a batch",
    "runtimeType": "models run Python handlers",
}


@dataclass(frozen=True)
class ModelEntry:
    """One model to load: its spec (a file in the model store or a zoo name), served name and
    version, and the settings the config gives it (ModelConfig field names)."""

    spec: str
    name: str
    version: str = "1"
    settings: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class TorchServeConfig:
    """What a config.properties says: server settings (LaunchConfig field names), models to
    load, and one warning line per key or parameter ignored."""

    server: Mapping[str, Any]
    models: tuple[ModelEntry, ...]
    warnings: tuple[str, ...]


def read_ts_config(path: Path) -> TorchServeConfig:
    """Read and map `path`; PackratError naming the file and key for values that cannot be
    honoured (https addresses, bad numbers or JSON)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PackratError(f"cannot read TorchServe config {path}: {exc.strerror}") from None
    where = str(path)
    try:
        properties = parse_properties(text)
    except PackratError as exc:
        raise PackratError(f"{where}: {exc}") from None
    warnings = [
        f"{where}: {key} is given more than once; the last wins" for key in duplicates(text)
    ]
    config = map_properties(properties, where=where)
    return TorchServeConfig(config.server, config.models, (*warnings, *config.warnings))


def map_properties(properties: Mapping[str, str], *, where: str) -> TorchServeConfig:
    """The Packrat settings of parsed config.properties `properties`; `where` names the file in
    messages."""
    server: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in properties.items():
        if key in ("load_models", "models", "model_store"):
            continue  # read together below
        try:
            mapped = _server_key(key, value.strip())
        except ValueError as exc:
            raise PackratError(f"{where}: {key}={value!r}: {exc}") from None
        if isinstance(mapped, str):
            warnings.append(f"{where}: {key} ignored: {mapped}")
        else:
            server.update(mapped)
    store = properties.get("model_store", "").strip()
    if store and store != "standalone":
        server["model_store"] = Path(store).expanduser()
    try:
        per_model = _models_json(properties.get("models", ""))
    except ValueError as exc:
        raise PackratError(f"{where}: models: {exc}") from None
    loads = _load_models(properties.get("load_models", "").strip(), server.get("model_store"))
    models: list[ModelEntry] = []
    for spec, name in loads:
        entry, notes = _model_entry(spec, name, per_model.get(name, {}))
        models.append(entry)
        warnings += [f"{where}: models: {note}" for note in notes]
    loaded = {name for _, name in loads}
    for name in per_model:
        if name not in loaded:
            warnings.append(f"{where}: models: {name!r} ignored: load_models does not load it")
    return TorchServeConfig(server, tuple(models), tuple(warnings))


def _server_key(key: str, value: str) -> dict[str, Any] | str:
    """The LaunchConfig settings `key` sets, or why it is ignored. ValueError for a value
    that cannot be honoured."""
    if key in ("inference_address", "management_address", "metrics_address"):
        host, port = _address(value)
        prefix = {"inference_address": "", "management_address": "management_"}.get(key, "metrics_")
        return {f"{prefix}host": host, f"{prefix}port": port}
    if key == "job_queue_size":
        return {"max_queue": _positive_int(value)}
    if key == "default_response_timeout":
        return {"batch_timeout_s": float(_positive_int(value))}
    if key == "max_request_size":
        return {"max_body_bytes": _positive_int(value)}
    if key == "metrics_mode":
        if value in ("prometheus", "legacy"):
            return {"metrics_compat": METRICS_COMPAT}
        if value == "log":
            return "Packrat writes no metrics log; /metrics serves Packrat's names"
        raise ValueError("choose log, prometheus or legacy")
    if key in _IGNORED:
        return _IGNORED[key]
    return "not a key Packrat or TorchServe knows"


def _address(value: str) -> tuple[str, int]:
    """(host, port) of `http://host[:port]` (port 80 if none, as TorchServe)."""
    parts = urlsplit(value)
    if parts.scheme == "https":
        raise ValueError(
            "Packrat serves plain HTTP: terminate TLS in a proxy in front, and give http://"
        )
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("give an address as http://host:port")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    return parts.hostname, 80 if port is None else port


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _models_json(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    """`models={"name": {"version": {param: value}}}` as dicts; ValueError if malformed."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(versions, dict) and all(isinstance(p, dict) for p in versions.values())
        for versions in data.values()
    ):
        raise ValueError('give {"model": {"version": {"batchSize": 4, ...}}}')
    return data


def _load_models(text: str, store: Path | None) -> list[tuple[str, str]]:
    """(spec, served name) for each model load_models names."""
    if not text or text == "standalone":
        return []
    if text == "all":
        if store is None:
            raise PackratError("load_models=all needs model_store")
        try:
            entries = sorted(store.iterdir())
        except OSError as exc:
            raise PackratError(f"cannot list model_store {store}: {exc.strerror}") from None
        return [
            (entry.name, _stem(entry.name))
            for entry in entries
            if entry.is_dir() or entry.suffix.lower() in _MODEL_SUFFIXES
        ]
    loads = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, spec = item.partition("=") if "=" in item else ("", "", item)
        loads.append((spec.strip(), name.strip() or _stem(spec.strip())))
    return loads


def _stem(spec: str) -> str:
    return Path(spec).stem if Path(spec).suffix else spec


def _model_entry(
    spec: str, name: str, versions: Mapping[str, Mapping[str, Any]]
) -> tuple[ModelEntry, list[str]]:
    """The entry for one loaded model, from its `models` JSON; notes on what is ignored."""
    if not versions:
        return ModelEntry(spec, name), []
    notes: list[str] = []
    chosen = next((v for v, p in versions.items() if p.get("defaultVersion") is True), None)
    version = chosen if chosen is not None else next(iter(versions))
    if len(versions) > 1:
        others = ", ".join(v for v in versions if v != version)
        notes.append(
            f"{name} versions {others} ignored: one load_models entry loads one version "
            f"({version}, the default)"
        )
    settings: dict[str, Any] = {}
    for param, value in versions[version].items():
        try:
            mapped = _model_param(param, value)
        except ValueError as exc:
            raise PackratError(f"models: {name} {version}: {param}={value!r}: {exc}") from None
        if isinstance(mapped, str):
            notes.append(f"{name} {version}: {param} ignored: {mapped}")
        else:
            settings.update(mapped)
    return ModelEntry(spec, name, version, tuple(settings.items())), notes


def _model_param(param: str, value: Any) -> dict[str, Any] | str:
    if param == "batchSize":
        return {"max_batch_size": _positive_int(str(value))}
    if param == "maxBatchDelay":
        return {"max_batch_delay_ms": float(_non_negative(value))}
    if param == "responseTimeout":
        return {"batch_timeout_s": float(_positive_int(str(value)))}
    if param == "jobQueueSize":
        return {"max_queue": _positive_int(str(value))}
    if param == "defaultVersion":
        return {}
    reason = _MODEL_PARAMS_IGNORED.get(param)
    return reason if reason is not None else "not a parameter Packrat or TorchServe knows"


def _non_negative(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("must be a number of milliseconds >= 0")
    return float(value)
