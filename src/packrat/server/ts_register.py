"""TorchServe's registration and scaling parameters, read as Packrat's (management API).

`POST /models?url=...` takes TorchServe's parameters (management_api.md, 0.12):

- honoured: url, model_name, batch_size (the largest batch), max_batch_delay (ms),
  response_timeout (s a worker may take on one batch);
- accepted with a warning, having no meaning here: initial_workers (the plan decides how many
  instances run), synchronous=false (registration always returns once the model serves),
  startup_timeout;
- refused with 400, since they cannot be honoured: handler (a model brings its own),
  s3_sse_kms=true (Packrat never downloads a model), a runtime other than python.

`PUT /models/{name}[/{version}]?min_worker=&max_worker=` (scale workers) is checked as
TorchServe checks it and answered with what runs: the plan decides the instances.
"""

from __future__ import annotations

from dataclasses import dataclass

from packrat.server.api import RegisterOptions
from packrat.server.errors import BadRequest

PYTHON_RUNTIMES = ("python", "python3")


@dataclass(frozen=True)
class Registration:
    """What a registration asks: settings for the model, and warnings for the caller."""

    options: RegisterOptions
    warnings: tuple[str, ...]


def read_registration(
    *,
    batch_size: int | None = None,
    max_batch_delay: int | None = None,
    response_timeout: int | None = None,
    initial_workers: int | None = None,
    synchronous: bool | None = None,
    runtime: str | None = None,
    handler: str | None = None,
    s3_sse_kms: bool | None = None,
    startup_timeout: int | None = None,
) -> Registration:
    """The options and warnings of TorchServe's registration parameters (None: not given).
    Raises BadRequest for one that cannot be honoured."""
    if handler:
        raise BadRequest(
            "handler cannot be set at registration: a model brings its own (a handler .py "
            "file, or the one in its archive); register that file instead"
        )
    if s3_sse_kms:
        raise BadRequest(
            "s3_sse_kms: Packrat never downloads models; copy the file into the model store "
            "and register it by name"
        )
    if runtime is not None and runtime.lower() not in PYTHON_RUNTIMES:
        raise BadRequest(f"runtime {runtime!r} is not supported: models run Python handlers")
    if batch_size is not None and batch_size < 1:
        raise BadRequest(f"batch_size must be at least 1, got {batch_size}")
    if max_batch_delay is not None and max_batch_delay < 0:
        raise BadRequest(f"max_batch_delay must be >= 0 ms, got {max_batch_delay}")
    # TorchServe reads -1 as "the server's default"; 0 (no time at all) is read the same way.
    if response_timeout is not None and response_timeout < -1:
        raise BadRequest(f"response_timeout must be at least 1 s (or -1), got {response_timeout}")
    warnings = []
    if initial_workers is not None:
        warnings.append(
            f"initial_workers={initial_workers} ignored: the plan decides how many instances run"
        )
    if synchronous is False:
        warnings.append("synchronous=false ignored: registration returns once the model serves")
    if startup_timeout is not None:
        warnings.append(f"startup_timeout={startup_timeout} ignored: workers have their own")
    options = RegisterOptions(
        max_batch_size=batch_size,
        max_batch_delay_ms=None if max_batch_delay is None else float(max_batch_delay),
        batch_timeout_s=None
        if response_timeout is None or response_timeout <= 0
        else float(response_timeout),
    )
    return Registration(options, tuple(warnings))


def scale_status(
    name: str,
    version: str | None,
    instances: int,
    min_worker: int | None,
    max_worker: int | None,
) -> str:
    """The answer to a scale-workers request: what runs, and that the plan decides. Raises
    BadRequest for what TorchServe refuses (max_worker below min_worker, negatives)."""
    for label, value in (("min_worker", min_worker), ("max_worker", max_worker)):
        if value is not None and value < 0:
            raise BadRequest(f"{label} must be >= 0, got {value}")
    which = f"model: {name}" + (f", version: {version}" if version is not None else "")
    asked = ", ".join(
        f"{label}={value}"
        for label, value in (("min_worker", min_worker), ("max_worker", max_worker))
        if value is not None
    )
    return (
        f"Workers not scaled for {which}: Packrat's plan decides how many instances run "
        f"({instances} now){'; ' + asked + ' ignored' if asked else ''}"
    )
