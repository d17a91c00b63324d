"""The models a server serves: resolve, profile, plan, place and start each one.

`Repository.register_model(ModelConfig(...))` turns a model spec into a running `ModelRuntime`:

1. resolve the spec (`resolve_model`): a zoo name, or a file in the model store;
2. its profile: `ModelConfig.profile` if given, else the cached one
   (`default_profile_path`), completed with a quick sweep where cells are missing (batch
   sizes 1, 2, 4, ... up to max_batch_size, every thread count of its cores; `QUICK_POLICY`;
   cells that no optimal plan for a batch up to max_batch_size can contain are skipped);
3. its first plan: the optimal one for all its cores and max_batch_size (`Planning`, with
   the profile interpolated between the profiled batch sizes: `LatencyTable.interpolated`), unless
   the config pins a plan or asks for the fat instance (then no profiling is done; a cached
   profile is still used to split batches);
4. placement on the model's cores (`allocate`), then start. Unless pinned, the plan then
   follows the load as the model's policy says (`packrat.controller.policy`; by default each
   batch runs the optimal plan for its own size), with enough workers started up front for
   every plan up to max_batch_size to switch in place.

`set_plan` and `set_cores` change a served model's plan, policy or cores (the management API);
each change goes through the same in-place switch between batches.

Each model may get its own CPUs (`ModelConfig.cores`); models on overlapping CPUs work but slow
each other down (a warning is logged).

Model files: with a `model_store` directory, every file spec must resolve (symlinks followed)
inside it, and relative specs are taken relative to it. Without one, `register()` (the HTTP
management API) accepts zoo names only, while `register_model()` (the operator's API, e.g.
`packrat serve model.pt`) loads any local file. Zoo names are always accepted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packrat.config import default_backend
from packrat.controller.admission import DEFAULT_MAX_QUEUE, DEFAULT_MAX_QUEUE_WAIT_MS
from packrat.controller.batching import DEFAULT_MAX_BATCH_DELAY_MS, BatchingConfig
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.plan_choice import ChoiceKind, PlanChoice, first_plan
from packrat.controller.planning import Planning
from packrat.controller.policy import PolicyKind
from packrat.errors import ModelError, PackratError, ProfileError, WorkerError
from packrat.models.base import ModelIdentity, ModelSource
from packrat.models.resolve import resolve_model
from packrat.models.torchserve_archive import is_archive_dir
from packrat.models.torchserve_source import ArchiveSource
from packrat.models.zoo import ZOO
from packrat.optimizer.table import LatencyTable
from packrat.pool.config import EngineConfig
from packrat.pool.engine import Engine
from packrat.pool.protocol import PoolFactory
from packrat.profiler.backend_select import candidates, select_backend
from packrat.profiler.cache import default_profile_path
from packrat.profiler.profile_file import Profile, load_profile
from packrat.profiler.sweep import SweepConfig, powers_of_two, profile_model
from packrat.progress import NullProgress, Progress
from packrat.server.api import (
    BadRequest,
    Conflict,
    NotFound,
    RegisterOptions,
    ServedModel,
    ServerError,
    Unavailable,
)
from packrat.server.archive_settings import with_archive_settings
from packrat.server.runtime import ModelRuntime
from packrat.stats import SamplingPolicy
from packrat.topology import (
    Topology,
    format_cpu_list,
    parse_cpu_list,
    read_topology,
    usable_topology,
)
from packrat.types import Plan, parse_plan

if TYPE_CHECKING:
    from packrat.server.api import ModelRepository

logger = logging.getLogger(__name__)

QUICK_POLICY = SamplingPolicy(warmup_runs=1, min_runs=3, max_runs=20, rel_ci=0.05, max_time_s=5)
"""Sampling for profiles made at registration: seconds per cell, not minutes."""

RuntimeHook = Callable[[ModelRuntime], None]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # safe in URL paths and file names


@dataclass(frozen=True)
class ModelConfig:
    """How to serve one model version.

    spec: a zoo name or a model file (see the module docstring for where files may be).
    name: the served name; None takes the zoo name or the file's stem. version: its version.
    cores: CPU ids the model's instances run on; None means every CPU this process may use.
    max_batch_size, max_batch_delay_ms, max_queue, max_queue_wait_ms: dynamic batching and
        its admission bounds (`BatchingConfig`);
        max_batch_size is also the batch the plan is made for.
    profile: a profile file (JSON or published CSV) to plan with instead of the cache.
    plan: instances to run instead of the optimal plan (allocated on `cores` if they have
        no cores yet). fat: run one instance with all cores instead. Either pins the plan.
    policy: how an unpinned plan follows the load (`PolicyKind`): "auto" runs each batch on
        the optimal plan for its size, "follow" on the plan for the batch size the estimator
        sees (with `estimator`'s settings), "fixed" always on the plan for max_batch_size;
        None takes the repository's default (`RepositoryDefaults.policy`).
    backend, precision: what the instances run on (`packrat.profiler.backend_select`):
        "auto" (default: $PACKRAT_BACKEND, else auto) serves on the fastest backend whose
        answers match torch's fp32 ones, or a backend by name (torch, onnxruntime,
        openvino); precision "auto" allows bf16 where the CPU runs it natively, "fp32"
        keeps exact fp32, "bf16" asks for it (within the error budget).
    batch_timeout_s: seconds a worker may take on one batch before it is replaced (its
        requests get 503); None: the server's (`EngineConfig.batch_timeout_s`). TorchServe's
        responseTimeout.
    sample_request: a request body file to profile a TorchServe archive with (default: the
        one the archive carries; see `packrat.models.torchserve_source`).

    A TorchServe archive's model-config.yaml sets batch_size, max_batch_delay_ms and
    batch_timeout_s over these, as in TorchServe (`packrat.server.archive_settings`).
    """

    spec: str
    name: str | None = None
    version: str = "1"
    cores: tuple[int, ...] | None = None
    max_batch_size: int = 8
    max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS
    max_queue: int = DEFAULT_MAX_QUEUE
    max_queue_wait_ms: float = DEFAULT_MAX_QUEUE_WAIT_MS
    profile: Path | None = None
    plan: Plan | None = None
    fat: bool = False
    policy: PolicyKind | None = None
    estimator: EstimatorConfig = dataclasses.field(default_factory=EstimatorConfig)
    backend: str = dataclasses.field(default_factory=default_backend)
    precision: str = "auto"
    batch_timeout_s: float | None = None
    sample_request: Path | None = None

    def __post_init__(self) -> None:
        if not self.spec:
            raise ValueError("ModelConfig.spec must name a zoo model or a file, got ''")
        for field_name in ("name", "version"):
            value = getattr(self, field_name)
            if value is not None and not _NAME.match(value):
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
        try:
            _ = self.batching  # validates the batching settings
        except ValueError as exc:
            raise ValueError(str(exc).replace("BatchingConfig.", "ModelConfig.")) from None
        if self.plan is not None and self.fat:
            raise ValueError("ModelConfig.plan and ModelConfig.fat=True exclude each other")
        try:
            candidates(self.backend, self.precision, bf16_native=True)
        except PackratError as exc:
            raise ValueError(f"ModelConfig: {exc}") from None
        timeout = self.batch_timeout_s
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise ValueError(
                f"ModelConfig.batch_timeout_s must be a positive number of seconds, got {timeout!r}"
            )
        if self.policy is not None and not isinstance(self.policy, PolicyKind):
            object.__setattr__(self, "policy", PolicyKind.parse(str(self.policy)))

    @property
    def batching(self) -> BatchingConfig:
        return BatchingConfig(
            self.max_batch_size, self.max_batch_delay_ms, self.max_queue, self.max_queue_wait_ms
        )

    def plan_choice(self, default_policy: PolicyKind) -> PlanChoice:
        """The first plan this config asks for: the plan pinned, the fat instance, or its
        policy (`default_policy` if it names none)."""
        if self.plan is not None:
            return PlanChoice(ChoiceKind.PLAN, self.plan)
        if self.fat:
            return PlanChoice(ChoiceKind.FAT)
        return PlanChoice.following(self.policy or default_policy)


@dataclass(frozen=True)
class RepositoryDefaults:
    """Settings for models registered by spec alone (`Repository.register`, the HTTP API);
    `policy` also for models whose config names none."""

    cores: tuple[int, ...] | None = None
    max_batch_size: int = 8
    max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS
    max_queue: int = DEFAULT_MAX_QUEUE
    max_queue_wait_ms: float = DEFAULT_MAX_QUEUE_WAIT_MS
    fat: bool = False
    policy: PolicyKind = PolicyKind.AUTO
    estimator: EstimatorConfig = dataclasses.field(default_factory=EstimatorConfig)

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
            max_batch_size=self.max_batch_size,
            max_batch_delay_ms=self.max_batch_delay_ms,
            max_queue=self.max_queue,
            max_queue_wait_ms=self.max_queue_wait_ms,
            fat=self.fat,
            policy=self.policy,
            estimator=self.estimator,
        )


class Repository:
    """Served models by name and version (`ModelRepository`); a name's default version is the
    one `set_default` last chose, else the first one registered, that is still served.

    model_store: the directory model files must be in (see the module docstring).
    engine_config: every model's pool settings. progress: where `register()` reports profiling.
    profile_kind: how a model without a cached profile is profiled at registration:
        "isolated" (each cell alone) or "contention" (beside copies of itself); the two are
        cached apart.
    pool_factory: makes each model's instance pool (default: worker processes, `Engine`).
    on_start, on_stop: called with each runtime once it serves (before `register*` returns)
        and once it has stopped (unregistered or closed), e.g. to attach and drop metrics; an
        exception they raise is logged.
    """

    def __init__(
        self,
        defaults: RepositoryDefaults | None = None,
        *,
        model_store: Path | None = None,
        engine_config: EngineConfig | None = None,
        progress: Progress | None = None,
        on_start: RuntimeHook | None = None,
        on_stop: RuntimeHook | None = None,
        profile_kind: str = "isolated",
        pool_factory: PoolFactory = Engine,
    ) -> None:
        self._defaults = defaults if defaults is not None else RepositoryDefaults()
        self._model_store = model_store
        self._engine_config = engine_config if engine_config is not None else EngineConfig()
        self._progress = progress if progress is not None else NullProgress()
        self._on_start = on_start
        self._on_stop = on_stop
        self._contention = profile_kind == "contention"
        self._pool_factory = pool_factory
        self._models: dict[str, dict[str, ModelRuntime]] = {}
        self._starting: set[tuple[str, str]] = set()
        self._closed = False

    def get(self, name: str, version: str | None = None) -> ModelRuntime:
        """The model's runtime (its default version if `version` is None); raises NotFound."""
        versions = self._models.get(name)
        if not versions:
            served = ", ".join(sorted(self._models)) or "none"
            raise NotFound(f"model '{name}' is not served (models served: {served})")
        if version is None:
            return next(iter(versions.values()))
        runtime = versions.get(version)
        if runtime is None:
            raise NotFound(
                f"model '{name}' has no version '{version}' (versions: {', '.join(versions)})"
            )
        return runtime

    def models(self) -> list[ServedModel]:
        return list(self.runtimes())

    def runtimes(self) -> list[ModelRuntime]:
        """Every served version, by name then registration order."""
        return [runtime for name in sorted(self._models) for runtime in self._models[name].values()]

    async def register(
        self, spec: str, *, name: str | None = None, options: RegisterOptions | None = None
    ) -> ModelRuntime:
        """Serve `spec` with the repository's defaults, `options` over them; the HTTP
        management API's entry.

        Files must be in the model store. Raises BadRequest if the spec cannot be resolved,
        the name is taken or invalid, an option is out of range, or the model fails to
        profile, plan or start.
        """
        try:
            config = self._defaults.model_config(spec, name)
            if options is not None:
                config = dataclasses.replace(config, **options.given())
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return await self._register(config, self._progress, files_anywhere=False)

    async def register_model(
        self, config: ModelConfig, *, progress: Progress | None = None
    ) -> ModelRuntime:
        """Serve a model as `config` says (profiling it first if needed, reported to
        `progress`). Raises BadRequest as `register` does; files may be anywhere unless a
        model store is configured."""
        return await self._register(config, progress or self._progress, files_anywhere=True)

    def set_default(self, name: str, version: str) -> ModelRuntime:
        """Make `version` the default one of `name` (what requests naming no version get).
        Raises NotFound."""
        runtime = self.get(name, version)
        versions = self._models[name]
        self._models[name] = {version: runtime} | versions
        return runtime

    async def unregister(self, name: str, version: str | None = None) -> None:
        """Stop one version (every version if `version` is None) after its queued and
        running requests finish. Raises NotFound."""
        self.get(name, version)  # NotFound before anything changes
        versions = self._models[name]
        chosen = list(versions) if version is None else [version]
        runtimes = [versions.pop(v) for v in chosen]
        if not versions:
            del self._models[name]
        await asyncio.gather(*(self._stop(runtime) for runtime in runtimes))

    async def set_plan(
        self,
        name: str,
        version: str | None = None,
        *,
        plan: str | None = None,
        policy: str | None = None,
    ) -> ModelRuntime:
        """Pin `plan` (paper notation such as "<2,1,4>", or "fat") or let `policy` ("auto",
        "follow", "fixed") choose the model's plan from its next batch on. Raises NotFound,
        or BadRequest for text that does not parse, both or neither given, or a plan that
        does not fit the model's cores."""
        runtime = self.get(name, version)
        if (plan is None) == (policy is None):
            raise BadRequest("give either a plan to pin or a policy to follow, not both")
        if policy is not None:
            try:
                kind = PolicyKind.parse(policy)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            await _changing(runtime, runtime.release(kind))
        elif plan is not None:
            await _changing(runtime, runtime.pin(_parse_plan(plan, runtime)))
        return runtime

    async def set_cores(
        self, name: str, cores: str | Sequence[int], version: str | None = None
    ) -> ModelRuntime:
        """Run the model on `cores` (CPU ids, or a CPU list such as "0-3,8") from its next
        batch on: the pinned plan placed there, or the policy's plan for the new core count.
        Raises NotFound, or BadRequest for CPUs this server may not use or a pinned plan
        that does not fit."""
        runtime = self.get(name, version)
        try:
            ids = parse_cpu_list(cores) if isinstance(cores, str) else set(cores)
        except ValueError as exc:
            raise BadRequest(f"cannot read cores {cores!r}: {exc}") from None
        if not ids or any(c < 0 for c in ids):
            raise BadRequest(f"cores must name at least one CPU id >= 0, got {cores!r}")
        topology = _topology(sorted(ids))
        self._warn_overlap(runtime.name, topology, besides=runtime)
        await _changing(runtime, runtime.move(runtime.planning.on(topology)))
        return runtime

    async def drain(self) -> None:
        """Stop taking requests and registrations (both get Unavailable) and finish the queued
        and running requests of every model, whose workers then stop. The models stay listed,
        so their requests get 503 rather than 404, until `close()`."""
        self._closed = True
        await asyncio.gather(*(runtime.stop() for runtime in self.runtimes()))

    async def close(self) -> None:
        """Stop every model (draining their requests); later registrations get Unavailable."""
        self._closed = True
        runtimes = self.runtimes()
        self._models.clear()
        await asyncio.gather(*(self._stop(runtime) for runtime in runtimes))

    async def _stop(self, runtime: ModelRuntime) -> None:
        await runtime.stop()
        _call(self._on_stop, runtime)

    # --- registration --------------------------------------------------------------------

    async def _register(
        self, config: ModelConfig, progress: Progress, *, files_anywhere: bool
    ) -> ModelRuntime:
        if self._closed:
            raise Unavailable("the model repository is closed")
        source = self._resolve(config, files_anywhere=files_anywhere)
        if isinstance(source, ArchiveSource):
            config = await asyncio.to_thread(with_archive_settings, config, source)
        name = config.name or _default_name(config.spec)
        if not _NAME.match(name):
            raise BadRequest(f"model name {name!r} is not valid; give one with letters and digits")
        key = (name, config.version)
        if key in self._starting or config.version in self._models.get(name, {}):
            raise Conflict(f"model '{name}' version '{config.version}' is already served")
        self._starting.add(key)
        try:
            runtime = await self._build(
                config, source, name, progress, loaded_at_startup=files_anywhere
            )
            await runtime.start()
        except ServerError:
            raise
        except PackratError as exc:
            raise BadRequest(f"cannot serve model '{name}': {exc}") from exc
        finally:
            self._starting.discard(key)
        if self._closed:  # closed while this model was starting
            await runtime.stop()
            raise Unavailable("the model repository is closed")
        self._models.setdefault(name, {})[config.version] = runtime
        _call(self._on_start, runtime)
        return runtime

    def _resolve(self, config: ModelConfig, *, files_anywhere: bool) -> ModelSource:
        """The source for `config.spec`, with model files confined to the model store."""
        spec, sample = config.spec, config.sample_request
        try:
            if spec in ZOO or "://" in spec:  # resolve_model refuses URLs with its own message
                return resolve_model(spec, sample_request=sample)
            store = self._model_store
            if store is None:
                if not files_anywhere:
                    raise BadRequest(
                        f"model '{spec}' is not a zoo model, and no model store is configured "
                        "to load files from"
                    )
                return resolve_model(spec, sample_request=sample)
            root = store.expanduser().resolve()
            path = (root / Path(spec).expanduser()).resolve()
            if not path.is_relative_to(root):
                raise BadRequest(f"model file '{spec}' is outside the model store")
            if not (path.is_file() or is_archive_dir(path)):  # without the server's paths
                raise BadRequest(f"model '{spec}' is neither a zoo model nor a file in the store")
            return resolve_model(str(path), sample_request=sample)
        except ModelError as exc:
            raise BadRequest(str(exc)) from exc

    async def _build(
        self,
        config: ModelConfig,
        source: ModelSource,
        name: str,
        progress: Progress,
        *,
        loaded_at_startup: bool,
    ) -> ModelRuntime:
        topology = _topology(config.cores)
        self._warn_overlap(name, topology)
        selection = await asyncio.to_thread(
            functools.partial(
                select_backend,
                source,
                config.backend,
                config.precision,
                topology,
                config.max_batch_size,
                engine_config=self._engine_config,
                progress=progress,
            )
        )
        source = selection.source
        identity = await asyncio.to_thread(source.identity)
        table = await self._table(config, source, identity, topology, progress)
        if table is not None:  # plan and split every batch size, not only the profiled ones
            table = table.interpolated()
        planning = Planning(topology, table, config.max_batch_size)
        choice = config.plan_choice(self._defaults.policy)
        # Planning takes up to seconds (128 cores, batches to 1024): not on the event loop.
        first = await asyncio.to_thread(
            functools.partial(first_plan, planning, choice, config.estimator, size_pool=True)
        )
        engine_config = self._engine_config
        if config.batch_timeout_s is not None:
            timeout_s = float(config.batch_timeout_s)
            engine_config = dataclasses.replace(engine_config, batch_timeout_s=timeout_s)
        pool = self._pool_factory(
            source,
            first.plan,
            engine_config,
            pool_size=first.pool_size,
            visible_cores=topology.cpu_ids(),
        )
        return ModelRuntime(
            name,
            config.version,
            source,
            first.plan,
            table,
            batching=config.batching,
            engine_config=engine_config,
            planning=planning,
            policy=first.policy,
            estimator=config.estimator,
            pool=pool,
            backend=selection.to_json(),
            loaded_at_startup=loaded_at_startup,
        )

    async def _table(
        self,
        config: ModelConfig,
        source: ModelSource,
        identity: ModelIdentity,
        topology: Topology,
        progress: Progress,
    ) -> LatencyTable | None:
        """The latency table to plan and split with; None only for pinned or fat plans
        without a cached profile (they are served without profiling)."""
        if config.profile is not None:
            return load_profile(config.profile).latency_table()
        path = default_profile_path(
            identity,
            topology,
            keep_freed_memory=self._engine_config.keep_freed_memory,
            contention=self._contention,
        )
        cached = _cached_profile(path)
        if config.plan is not None or config.fat:
            return cached.latency_table() if cached is not None else None
        sweep = SweepConfig(
            topology.num_cores,
            powers_of_two(config.max_batch_size),
            QUICK_POLICY,
            contention=self._contention,
            asked=tuple(range(1, config.max_batch_size + 1)),  # every size it plans for
        )
        if cached is not None and not sweep.needs_measuring(cached):
            return cached.latency_table()
        logger.info("profiling %s into %s", identity.name, path)
        profile = await asyncio.to_thread(
            functools.partial(
                profile_model,
                source,
                sweep,
                out=path,
                existing=cached,
                topology=topology,
                progress=progress,
                engine_config=self._engine_config,  # the cache path is keyed by it too
            )
        )
        return profile.latency_table()

    def _warn_overlap(
        self, name: str, topology: Topology, besides: ModelRuntime | None = None
    ) -> None:
        mine = set(topology.cpu_ids())
        for runtime in self.runtimes():
            if runtime is besides:
                continue
            shared = mine & {c for i in runtime.plan.instances for c in i.cores}
            if shared:
                logger.warning(
                    "model %s shares CPUs %s with model %s: both will run slower",
                    name,
                    format_cpu_list(shared),
                    runtime.name,
                )


def _call(hook: RuntimeHook | None, runtime: ModelRuntime) -> None:
    if hook is None:
        return
    try:
        hook(runtime)
    except Exception:
        logger.exception("repository hook failed for model %s:%s", runtime.name, runtime.version)


def _cached_profile(path: Path) -> Profile | None:
    """The profile cached at `path`; None if there is none or it cannot be read (it is then
    measured again and overwritten)."""
    if not path.is_file():
        return None
    try:
        return load_profile(path)
    except ProfileError as exc:
        logger.warning("ignoring unreadable cached profile: %s", exc)
        return None


def _topology(cores: Sequence[int] | None) -> Topology:
    """The physical cores of `cores` (CPU ids), or of every CPU this process may use."""
    if cores is None:
        return usable_topology().topology
    allowed = os.sched_getaffinity(0)
    outside = sorted(set(cores) - allowed)
    if outside:
        raise BadRequest(
            f"cores {format_cpu_list(outside)} are not CPUs this server may use "
            f"({format_cpu_list(allowed)})"
        )
    return read_topology(allowed=set(cores))


async def _changing(runtime: ModelRuntime, change: Awaitable[Plan]) -> Plan:
    """`change`'s plan; Unavailable (503) if the model's workers failed to make it."""
    try:
        return await change
    except WorkerError as exc:
        raise Unavailable(f"model {runtime.name} cannot change plans: {exc}") from exc


def _parse_plan(text: str, runtime: ModelRuntime) -> Plan:
    """A plan to pin from the management API: paper notation, or "fat" (all the model's
    cores, one instance)."""
    if text.strip().lower() == "fat":
        return runtime.planning.fat()
    try:
        return parse_plan(text)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _default_name(spec: str) -> str:
    return spec if spec in ZOO else Path(spec.rstrip("/")).stem


if TYPE_CHECKING:

    def _conforms(repository: Repository, runtime: ModelRuntime) -> ModelRepository:
        served: ServedModel = runtime
        del served
        return repository
