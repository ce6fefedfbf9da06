"""Model routes: list models, show one, and set its default version (rollback).

``POST /v1/models/{model}:setDefault`` with ``{"version": "v1"}`` — or ML Engine's
``POST /v1/models/{model}/versions/{v}:setDefault`` — first loads and verifies the
version here (a version whose artifact fails its sha256 is refused, 409, and the
default does not move), then changes the registry, which publishes the change on
``model-updates`` so every gateway switches; this one switches at once.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.concurrency import run_in_threadpool

from rotwatch.events import InvalidEvent
from publishers.gateway.auth import require_token
from publishers.gateway.errors import ApiError, ErrorBody
from publishers.gateway.models import ModelUnavailable
from publishers.gateway.predict import MODEL_PATH, VERSION_PATH
from publishers.gateway.schemas import DefaultChanged, ModelDetail, ModelList, \
    SetDefaultRequest

__all__ = ["router"]

_LOGGER = logging.getLogger(__name__)

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 422, 503)}
_VERSION_FIELDS = ("version", "status", "estimator", "params", "n_features", "classes",
                   "baseline_accuracy", "metrics", "train_start", "train_end",
                   "train_rows", "parent_version", "created_at", "created_by", "sha256")

router = APIRouter(tags=["models"])


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


async def _registry(call, *args, **kwargs):
    """Run a blocking registry call; its errors become 4xx/503 naming the problem."""
    from google.api_core import exceptions as gexc

    from rotwatch import artifacts, registry

    try:
        return await run_in_threadpool(call, *args, **kwargs)
    except artifacts.ArtifactIntegrityError as exc:
        raise ApiError(409, str(exc)) from None
    except (registry.ModelNotFound, registry.VersionNotFound) as exc:
        raise ApiError(404, str(exc)) from None
    except registry.VersionNotReady as exc:
        raise ApiError(409, str(exc)) from None
    except (InvalidEvent, ValueError) as exc:
        raise ApiError(400, str(exc)) from None
    except gexc.GoogleAPICallError as exc:
        raise ApiError(503, f"the model registry (Datastore) did not answer: "
                            f"{exc.message}; retry shortly") from None


@router.get("/v1/models", response_model=ModelList, responses=_ERRORS,
            summary="Registered models, their default and what this gateway serves")
async def list_models(request: Request):
    gateway = request.app.state.gateway
    records = await _registry(gateway.registry.list_models)
    serving = gateway.cache.serving()
    return {"models": [{"name": r.name, "default_version": r.default_version,
                        "serving_version": serving.get(r.name),
                        "updated_at": _json_value(r.updated_at)} for r in records]}


async def _set_default(request: Request, model: str, version: str, reason: str):
    gateway = request.app.state.gateway
    try:  # refuse before the pointer moves: the version must load and verify here
        await run_in_threadpool(gateway.cache.resolve, model, version)
    except ModelUnavailable as exc:
        raise ApiError(exc.status, exc.message) from None
    from rotwatch.registry import UpdateNotPublished

    published = True
    try:
        update = await _registry(gateway.registry.set_default, model, version,
                                 changed_by=gateway.config.changed_by,
                                 reason=reason or "set through the gateway API")
    except UpdateNotPublished as exc:
        _LOGGER.error("step=set-default model=%s version=%s outcome=not-published "
                      "reason=%s", model, version, exc)
        update, published = exc.update, False
    try:
        serving = (await run_in_threadpool(gateway.cache.refresh_default, model)).version
    except ModelUnavailable as exc:
        _LOGGER.error("step=set-default model=%s outcome=serving-kept reason=%s", model,
                      exc.message)
        serving = gateway.cache.serving().get(model)
    if update is None:
        return {"model": model, "default_version": version, "previous_version": version,
                "changed": False, "published": False, "serving_version": serving}
    return {"model": model, "default_version": update.default_version,
            "previous_version": update.previous_version, "changed": True,
            "published": published, "serving_version": serving}


@router.post("/v1/models/{model}:setDefault", response_model=DefaultChanged,
             responses=_ERRORS, dependencies=[Depends(require_token)],
             summary="Make a version the default (rollback)")
async def set_default(model: Annotated[str, MODEL_PATH], body: SetDefaultRequest,
                      request: Request):
    return await _set_default(request, model, body.version, body.reason)


@router.post("/v1/models/{model}/versions/{version}:setDefault",
             response_model=DefaultChanged, responses=_ERRORS,
             dependencies=[Depends(require_token)],
             summary="Make this version the default (ML Engine's form)")
async def set_default_version(model: Annotated[str, MODEL_PATH],
                              version: Annotated[str, VERSION_PATH], request: Request,
                              reason: Annotated[str, Body(embed=True, max_length=500)] = ""):
    return await _set_default(request, model, version, reason)


@router.get("/v1/models/{model}", response_model=ModelDetail, responses=_ERRORS,
            summary="A model: versions with their metrics, default, history")
async def show_model(model: Annotated[str, MODEL_PATH], request: Request):
    gateway = request.app.state.gateway
    record = await _registry(gateway.registry.get_model, model)
    versions = await _registry(gateway.registry.list_versions, model)
    history = await _registry(gateway.registry.history, model)
    return {
        "name": record.name, "default_version": record.default_version,
        "serving_version": gateway.cache.serving().get(model),
        "loaded_versions": gateway.cache.loaded_versions(model),
        "versions": [{f: _json_value(getattr(v, f)) for f in _VERSION_FIELDS}
                     for v in versions],
        "history": [{"version": c.version, "previous_version": c.previous_version,
                     "changed_by": c.changed_by, "reason": c.reason,
                     "changed_at": _json_value(c.changed_at)} for c in history],
    }
