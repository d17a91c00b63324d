"""The management app: TorchServe's management API over a model repository.

`GET /models` lists models, `GET /models/{name}[/{version}|/all]` describes them
(TorchServe's fields, `ts_describe`, then Packrat's: plan, policy, recent switches, instances
and their cores, batching), `POST /models?url=...` registers a zoo model or a file in the model
store with TorchServe's parameters (`ts_register`), `PUT /models/{name}/{version}/set-default`
sets the default version, `PUT /models/{name}[/{version}]?min_worker=...` answers that the
plan decides the workers, `DELETE /models/{name}[/{version}]` unregisters.
`GET /models/{name}[/{version}]/switches` lists the model's changes of plan (the last 10,000).

Packrat's own: `PUT /models/{name}[/{version}]/plan` with `{"plan": "<2,1,4>"}` (or "fat")
pins a plan and `{"policy": "auto"}` (or "follow", "fixed") lets the load choose again;
`PUT /models/{name}[/{version}]/cores` with `{"cores": "0-3"}` (or a list of CPU ids) moves
the model. Each change is made between two batches by the same in-place switch.

With a token configured (`HttpConfig.token`), every route requires it
(`packrat.server.http_auth`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Depends as depends
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from packrat import __version__
from packrat.server.api import ModelRepository, ServedModel
from packrat.server.errors import BadRequest
from packrat.server.http_auth import TokenAuth
from packrat.server.http_config import HttpConfig
from packrat.server.responses import ERROR_RESPONSES, install_error_handlers
from packrat.server.ts_describe import torchserve_fields
from packrat.server.ts_register import read_registration, scale_status

logger = logging.getLogger(__name__)


class PlanChange(BaseModel):
    """Exactly one of: a plan to pin, or a policy to follow."""

    model_config = ConfigDict(extra="forbid")

    plan: str | None = Field(None, min_length=1, description='plan to pin, e.g. "<2,1,4>" or "fat"')
    policy: str | None = Field(None, min_length=1, description='"auto", "follow" or "fixed"')


class CoresChange(BaseModel):
    """The CPUs to run the model on."""

    model_config = ConfigDict(extra="forbid")

    cores: str | list[int] = Field(..., description='CPU list such as "0-3,8", or CPU ids')


Body = TypeVar("Body", bound=BaseModel)


def _json_body(model: type[Body]) -> Callable[[Request], Awaitable[Body]]:
    """A dependency reading the body as JSON whatever its content type (`curl -d` sends
    form-urlencoded), validated as `model`."""

    async def parse(request: Request) -> Body:
        raw = await request.body()
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise BadRequest(f"body: not valid JSON ({exc})") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = [dict(e, loc=("body", *e["loc"])) for e in exc.errors()]
            raise RequestValidationError(errors) from None

    return parse


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads `model` with `_json_body`."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


_PLAN = _body_schema(PlanChange)
_CORES = _body_schema(CoresChange)


def create_management_app(repo: ModelRepository, config: HttpConfig | None = None) -> FastAPI:
    """The management app over `repo`."""
    config = config or HttpConfig()
    app = FastAPI(title="Packrat management", version=__version__)
    install_error_handlers(app)
    if config.token is not None:
        app.add_middleware(TokenAuth, token=config.token)
    app.include_router(_management_router(repo))
    return app


def _management_router(repo: ModelRepository) -> APIRouter:
    router = APIRouter(tags=["management"], responses=ERROR_RESPONSES)

    @router.get("/models", summary="List models")
    async def list_models(
        limit: int = Query(100, ge=1, description="most models to list"),
        next_page_token: int = Query(0, ge=0, description="index of the first model to list"),
    ) -> dict[str, Any]:
        models = sorted(repo.models(), key=lambda model: (model.name, model.version))
        page = models[next_page_token : next_page_token + limit]
        listing: dict[str, Any] = {
            "models": [{"modelName": m.name, "modelUrl": _url(m)} for m in page]
        }
        if next_page_token + limit < len(models):
            listing["nextPageToken"] = str(next_page_token + limit)
        return listing

    @router.get("/models/{model_name}", summary="Describe a model's default version")
    async def describe_model(model_name: str) -> list[dict[str, Any]]:
        return [_describe(repo.get(model_name))]

    @router.get("/models/{model_name}/all", summary="Describe every version of a model")
    async def describe_all(model_name: str) -> list[dict[str, Any]]:
        repo.get(model_name)  # NotFound for an unknown name
        versions = [m for m in repo.models() if m.name == model_name]
        return [_describe(m) for m in sorted(versions, key=lambda m: m.version)]

    @router.get("/models/{model_name}/switches", summary="A model's changes of plan")
    async def switches(model_name: str) -> list[Mapping[str, Any]]:
        return list(repo.get(model_name).switch_log())

    @router.get("/models/{model_name}/{version}", summary="Describe a model version")
    async def describe_version(model_name: str, version: str) -> list[dict[str, Any]]:
        return [_describe(repo.get(model_name, version))]

    @router.post("/models", summary="Register a model (TorchServe's parameters)")
    async def register(
        url: str = Query(..., min_length=1, description="a zoo name or a file in the store"),
        model_name: str | None = Query(None, min_length=1, description="name to serve it as"),
        batch_size: int | None = Query(None, ge=1, description="largest batch"),
        max_batch_delay: int | None = Query(None, ge=0, description="ms a batch waits for more"),
        response_timeout: int | None = Query(
            None, ge=-1, description="s a worker may take a batch; -1 or 0: the server's"
        ),
        initial_workers: int | None = Query(None, ge=0, description="ignored: the plan decides"),
        synchronous: bool | None = Query(None, description="registration is synchronous"),
        # TorchServe's, refused with a 400 that says why (runtime: python only; handler: a
        # model brings its own; s3_sse_kms=true: Packrat never downloads): not in the schema.
        runtime: str | None = Query(None, include_in_schema=False),
        handler: str | None = Query(None, include_in_schema=False),
        s3_sse_kms: bool | None = Query(None, include_in_schema=False),
        startup_timeout: int | None = Query(None, description="ignored"),
    ) -> dict[str, Any]:
        asked = read_registration(
            batch_size=batch_size,
            max_batch_delay=max_batch_delay,
            response_timeout=response_timeout,
            initial_workers=initial_workers,
            synchronous=synchronous,
            runtime=runtime,
            handler=handler,
            s3_sse_kms=s3_sse_kms,
            startup_timeout=startup_timeout,
        )
        model = await repo.register(url, name=model_name, options=asked.options)
        reply: dict[str, Any] = {
            "status": f'Model "{model.name}" Version: {model.version} registered'
        }
        if asked.warnings:
            for warning in asked.warnings:
                logger.warning("registering %s: %s", model.name, warning)
            reply["warnings"] = list(asked.warnings)
        return reply

    @router.put("/models/{model_name}/{version}/set-default", summary="Set the default version")
    async def set_default(model_name: str, version: str) -> dict[str, str]:
        repo.set_default(model_name, version)
        return {
            "status": f'Default version successfully updated for model "{model_name}" '
            f'to "{version}"'
        }

    @router.get("/models/{model_name}/{version}/switches", summary="A version's changes of plan")
    async def version_switches(model_name: str, version: str) -> list[Mapping[str, Any]]:
        return list(repo.get(model_name, version).switch_log())

    plan_change = depends(_json_body(PlanChange))
    cores_change = depends(_json_body(CoresChange))

    @router.put(
        "/models/{model_name}/plan", summary="Pin a plan or set the policy", openapi_extra=_PLAN
    )
    async def set_plan(model_name: str, change: PlanChange = plan_change) -> dict[str, Any]:
        return _changed(await repo.set_plan(model_name, plan=change.plan, policy=change.policy))

    @router.put(
        "/models/{model_name}/{version}/plan", summary="Pin a version's plan", openapi_extra=_PLAN
    )
    async def set_version_plan(
        model_name: str, version: str, change: PlanChange = plan_change
    ) -> dict[str, Any]:
        model = await repo.set_plan(model_name, version, plan=change.plan, policy=change.policy)
        return _changed(model)

    @router.put(
        "/models/{model_name}/cores", summary="Move a model to other cores", openapi_extra=_CORES
    )
    async def set_cores(model_name: str, change: CoresChange = cores_change) -> dict[str, Any]:
        return _changed(await repo.set_cores(model_name, change.cores))

    @router.put(
        "/models/{model_name}/{version}/cores",
        summary="Move a version to other cores",
        openapi_extra=_CORES,
    )
    async def set_version_cores(
        model_name: str, version: str, change: CoresChange = cores_change
    ) -> dict[str, Any]:
        return _changed(await repo.set_cores(model_name, change.cores, version))

    @router.put("/models/{model_name}", summary="Scale workers: the plan decides")
    async def scale(
        model_name: str,
        min_worker: int | None = Query(None, ge=0, description="ignored: the plan decides"),
        max_worker: int | None = Query(None, ge=0, description="ignored: the plan decides"),
        synchronous: bool | None = Query(None),
        timeout: int | None = Query(None),
    ) -> dict[str, str]:
        model = repo.get(model_name)
        count = len(model.describe().get("instances") or [])
        return {"status": scale_status(model_name, None, count, min_worker, max_worker)}

    @router.put("/models/{model_name}/{version}", summary="Scale a version's workers")
    async def scale_version(
        model_name: str,
        version: str,
        min_worker: int | None = Query(None, ge=0, description="ignored: the plan decides"),
        max_worker: int | None = Query(None, ge=0, description="ignored: the plan decides"),
        synchronous: bool | None = Query(None),
        timeout: int | None = Query(None),
    ) -> dict[str, str]:
        model = repo.get(model_name, version)
        count = len(model.describe().get("instances") or [])
        return {"status": scale_status(model_name, version, count, min_worker, max_worker)}

    @router.delete("/models/{model_name}", summary="Unregister a model")
    async def unregister(model_name: str) -> dict[str, str]:
        await repo.unregister(model_name)
        return {"status": f'Model "{model_name}" unregistered'}

    @router.delete("/models/{model_name}/{version}", summary="Unregister a model version")
    async def unregister_version(model_name: str, version: str) -> dict[str, str]:
        await repo.unregister(model_name, version)
        return {"status": f'Model "{model_name}" version: {version} unregistered'}

    return router


def _describe(model: ServedModel) -> dict[str, Any]:
    """TorchServe's describe fields (`ts_describe`), then Packrat's own."""
    description = dict(model.describe())
    header = {"modelName": model.name, "modelVersion": model.version}
    ts = torchserve_fields(description, _url(model, description))
    return header | ts | {"ready": model.ready} | description


def _changed(model: ServedModel) -> dict[str, Any]:
    """The reply to a change of plan, policy or cores: a status line and the description."""
    description = _describe(model)
    plan = description.get("plan", {})
    shown = plan.get("describe", plan) if isinstance(plan, Mapping) else plan
    status = f'Model "{model.name}" Version: {model.version} runs plan {shown}'
    return {"status": status, "model": description}


def _url(model: ServedModel, description: Mapping[str, Any] | None = None) -> str:
    """Where the model came from: the description's "url", else its "model"."source" (what
    the runtime records), else the model's name."""
    if description is None:
        description = model.describe()
    url = description.get("url")
    source = description.get("model")
    if not isinstance(url, str) and isinstance(source, Mapping):
        url = source.get("source")
    return url if isinstance(url, str) else model.name
