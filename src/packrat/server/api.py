"""What the HTTP and gRPC layers need from a served model and the repository of models.

The HTTP apps (`packrat.server.http_*`) see models only through these protocols, so they are
tested with fakes; `packrat.server.runtime` implements them over real instance pools.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from packrat.models.inputs import InputSpec


@dataclass(frozen=True)
class RegisterOptions:
    """Settings a registration gives its model over the server's defaults (None: the
    default): TorchServe's batch_size, max_batch_delay (ms) and response_timeout (s)."""

    max_batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    batch_timeout_s: float | None = None

    def given(self) -> dict[str, Any]:
        """The settings given, by ModelConfig field name (the batching ones as flat keys,
        `ModelConfig.with_flat`)."""
        return {k: v for k, v in vars(self).items() if v is not None}


class ServedModel(Protocol):
    """One model version being served, as the HTTP layer sees it."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def input_spec(self) -> InputSpec | None:
        """Per-request input (shape without the batch dimension, dtype); None if unknown."""

    @property
    def takes_raw_requests(self) -> bool:
        """Whether requests reach the model as the client sent them (`TorchServeRequest`,
        answered with a `TorchServeReply`): a TorchServe archive's handler."""

    @property
    def ready(self) -> bool:
        """Taking requests."""

    @property
    def degraded(self) -> bool:
        """Taking requests, but an instance was lost and is being replaced."""

    async def infer(self, request: Any) -> Any:
        """One request (a decoded input, e.g. a tensor) in, its output out, through the
        model's dynamic batcher. Raises InferenceFailed, Unavailable or BadRequest."""

    async def infer_timed(self, request: Any) -> tuple[Any, float]:
        """`infer`, plus the seconds the model computed on the sub-batch that held this
        request (its handler's time in the worker), for the `Server-Timing` header."""

    def describe(self) -> Mapping[str, Any]:
        """JSON-ready description: plan, instances and their cores, batching settings."""

    def switch_log(self) -> Sequence[Mapping[str, Any]]:
        """JSON-ready changes of plan, oldest first: from, to, reason, at_unix_s, took_ms."""


class ModelRepository(Protocol):
    """The models a server serves, by name and version."""

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model (its default version if `version` is None); raises NotFound."""

    def models(self) -> list[ServedModel]: ...

    async def register(
        self, spec: str, *, name: str | None = None, options: RegisterOptions | None = None
    ) -> ServedModel:
        """Load and start a model from a zoo name or a file in the model store, with
        `options` over the server's default settings.

        Raises BadRequest for a spec that cannot be resolved or options out of range,
        Conflict for a name and version already served."""

    def set_default(self, name: str, version: str) -> ServedModel:
        """Make `version` the one requests naming no version get; raises NotFound."""

    async def unregister(self, name: str, version: str | None = None) -> None:
        """Stop a model after its in-flight requests finish; raises NotFound."""

    async def set_plan(
        self,
        name: str,
        version: str | None = None,
        *,
        plan: str | None = None,
        policy: str | None = None,
    ) -> ServedModel:
        """Pin `plan` ("<2,1,4>" notation, or "fat") or let `policy` ("auto", "follow",
        "fixed") choose the model's plans, from its next batch on; exactly one of the two.
        Raises NotFound, or BadRequest naming what is wrong."""

    async def set_cores(
        self, name: str, cores: str | Sequence[int], version: str | None = None
    ) -> ServedModel:
        """Run the model on `cores` (CPU ids, or a list such as "0-3,8") from its next batch
        on. Raises NotFound, or BadRequest naming what is wrong."""
