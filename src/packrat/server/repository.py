"""The models a server serves: resolve, profile, plan, place and start each one.

`Repository.register_model(ModelConfig(...))` turns a model spec into a running `ModelRuntime`:

1. resolve the spec: a zoo name, or a file in the model store (`packrat.server.model_setup`);
2. its backend (`profiler.backend_select`) and latency table: the profile given, else the
   cached one, completed with a quick sweep where cells are missing; where several backends
   contend, each one's, and their plans choose one or a mix by cell
   (`model_setup.serving_table`);
3. its first plan and policy (`packrat.controller.plan_choice.first_plan`): the optimal plan
   for all its cores and max_batch_size (`Planning`, with the profile interpolated between the
   profiled batch sizes: `LatencyTable.interpolated`), unless the config pins a plan or asks
   for the fat instance (then no profiling is done; a cached profile is still used to split
   batches);
4. placement on the model's cores (`allocate`), its instance pool (`pool_factory`, by default
   an `Engine` of worker processes), then start. Unless pinned, the plan then follows the
   load as the model's policy says (`packrat.controller.policy`; by default each batch runs
   the optimal plan for its own size), with enough workers started up front for every plan
   up to max_batch_size to switch in place.

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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from packrat.controller.calibration import CalibrationConfig
from packrat.controller.plan_choice import first_plan
from packrat.controller.planning import Planning
from packrat.controller.policy import PolicyKind
from packrat.errors import PackratError, WorkerError
from packrat.models.base import ModelSource
from packrat.models.torchserve_source import ArchiveSource
from packrat.pool.config import EngineConfig
from packrat.pool.engine import Engine
from packrat.pool.protocol import PoolFactory
from packrat.profiler.backend_select import select_backend
from packrat.profiler.contention import ProfileKindSetting
from packrat.progress import NullProgress, Progress
from packrat.server.api import RegisterOptions, ServedModel
from packrat.server.archive_settings import with_archive_settings
from packrat.server.errors import BadRequest, Conflict, NotFound, ServerError, Unavailable
from packrat.server.model_config import (
    MODEL_NAME,
    ModelConfig,
    RepositoryDefaults,
    default_max_workers,
)
from packrat.server.model_setup import (
    QUICK_POLICY,
    default_name,
    model_topology,
    resolve_source,
    serving_table,
)
from packrat.server.runtime import ModelRuntime
from packrat.topology import Topology, format_cpu_list, parse_cpu_list
from packrat.types import Plan, parse_plan

# ModelConfig, RepositoryDefaults and QUICK_POLICY were defined here: they still import from here.
__all__ = ["QUICK_POLICY", "ModelConfig", "Repository", "RepositoryDefaults", "RuntimeHook"]

if TYPE_CHECKING:
    from packrat.server.api import ModelRepository

logger = logging.getLogger(__name__)

RuntimeHook = Callable[[ModelRuntime], None]


class Repository:
    """Served models by name and version (`ModelRepository`); a name's default version is the
    one `set_default` last chose, else the first one registered, that is still served.

    model_store: the directory model files must be in (see the module docstring).
    engine_config: every model's pool settings. progress: where `register()` reports profiling.
    profile_kind: how a model without a cached profile is profiled at registration (each
        cell alone, or beside copies of itself; auto: by its cores, `ProfileKindSetting`);
        the two kinds are cached apart. The server passes its setting (auto by default).
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
        profile_kind: ProfileKindSetting = ProfileKindSetting.ISOLATED,
        pool_factory: PoolFactory = Engine,
    ) -> None:
        self._defaults = defaults if defaults is not None else RepositoryDefaults()
        self._model_store = model_store
        self._engine_config = engine_config if engine_config is not None else EngineConfig()
        self._progress = progress if progress is not None else NullProgress()
        self._on_start = on_start
        self._on_stop = on_stop
        self._profile_kind = profile_kind
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
                config = config.with_flat(options.given())
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
        topology = model_topology(sorted(ids))
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
        name = config.name or default_name(config.spec)
        if not MODEL_NAME.match(name):
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
        return resolve_source(config, self._model_store, files_anywhere=files_anywhere)

    async def _build(
        self,
        config: ModelConfig,
        source: ModelSource,
        name: str,
        progress: Progress,
        *,
        loaded_at_startup: bool,
    ) -> ModelRuntime:
        choice = config.choice or self._defaults.choice
        config = dataclasses.replace(config, choice=choice)  # a pinned plan is not profiled
        topology = model_topology(config.cores)
        self._warn_overlap(name, topology)
        batch = config.batching.max_batch_size
        selection = await asyncio.to_thread(
            functools.partial(
                select_backend, source, config.backend, config.precision, topology, batch,
                engine_config=self._engine_config, progress=progress,
            )
        )  # fmt: skip
        selection, table = await serving_table(
            config, selection, topology, progress,
            engine_config=self._engine_config,
            contention=self._profile_kind.contention_on(topology.num_cores),
        )  # fmt: skip
        source = selection.source
        most = config.max_workers or default_max_workers(topology.num_cores)
        planning = Planning(topology, table, batch, None if source.moves_in_place else most)
        # Planning takes up to seconds (128 cores, batches to 1024): not on the event loop.
        first = await asyncio.to_thread(
            functools.partial(first_plan, planning, choice, config.estimator, size_pool=True)
        )
        engine_config = self._engine_config
        if config.batch_timeout_s is not None:
            timeout_s = float(config.batch_timeout_s)
            engine_config = dataclasses.replace(engine_config, batch_timeout_s=timeout_s)
        pool = self._pool_factory(
            source, first.plan, engine_config, pool_size=first.pool_size,
            visible_cores=topology.cpu_ids(), spares=first.spares,
        )  # fmt: skip
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
            calibration=CalibrationConfig() if config.calibrate else None,
        )

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
                    name, format_cpu_list(shared), runtime.name,
                )  # fmt: skip


def _call(hook: RuntimeHook | None, runtime: ModelRuntime) -> None:
    if hook is None:
        return
    try:
        hook(runtime)
    except Exception:
        logger.exception("repository hook failed for model %s:%s", runtime.name, runtime.version)


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


if TYPE_CHECKING:

    def _conforms(repository: Repository, runtime: ModelRuntime) -> ModelRepository:
        served: ServedModel = runtime
        del served
        return repository
