"""Prediction routes, in Google ML Engine's request format.

``POST /v1/predict`` names the model in the body (the article's clients); the REST
forms name it in the path, as ML Engine's ``projects.predict`` does. Each answer
carries the version that answered and one ``prediction_id`` per instance.

The hot path does no I/O: the model comes from the cache (a dict lookup); only a model
or version not yet loaded is read from the registry, in a worker thread.
"""
from __future__ import annotations

import json
import logging
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from publishers.gateway.errors import ApiError, ErrorBody
from publishers.gateway.models import ModelUnavailable, parse_model_spec
from publishers.gateway.schemas import InstancesRequest, PredictRequest, PredictResponse

__all__ = ["router", "answer", "predict_instances", "MODEL_PATTERN", "VERSION_PATTERN"]

_LOGGER = logging.getLogger(__name__)

# Path parameters as the registry names them (rotwatch.events), checked by FastAPI.
MODEL_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$"
VERSION_PATTERN = r"^v[1-9][0-9]{0,8}$"
MODEL_PATH = Path(pattern=MODEL_PATTERN, examples=["zombies"])
VERSION_PATH = Path(pattern=VERSION_PATTERN, examples=["v1"])

_ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 409, 413, 422, 503)}

router = APIRouter(tags=["predict"])


def answer(gateway, loaded, instances: list[list[float]]) -> bytes:
    """The JSON answer of ``loaded`` for ``instances``: predictions, the version that
    answered, one new ``prediction_id`` per instance (remembered for feedback).

    Raises :class:`ApiError` (400) for a wrong feature count or values the model
    cannot take. Used by the routes and by :mod:`publishers.gateway.fastlane`.
    """
    expected = loaded.n_features
    for i, row in enumerate(instances):
        if len(row) != expected:
            raise ApiError(400, f"instances[{i}] has {len(row)} feature values; "
                                f"{loaded.model} {loaded.version} expects {expected}")
    X = np.asarray(instances, dtype=np.float64)
    try:
        predictions = loaded.predict(X)
    except (ValueError, TypeError) as exc:
        # e.g. 1e300 is a finite double but too large for a tree's float32 features
        raise ApiError(400, f"{loaded.model} {loaded.version} cannot take these "
                            f"instances: {exc}") from None
    ids = gateway.memory.remember_many(loaded.model, loaded.version, X, predictions)
    return json.dumps({"predictions": predictions, "model": loaded.model,
                       "version": loaded.version, "prediction_ids": ids},
                      separators=(",", ":")).encode("utf-8")


async def predict_instances(request: Request, model: str, version: str | None,
                            instances: list[list[float]]) -> Response:
    gateway = request.app.state.gateway
    loaded = gateway.cache.cached(model, version)
    if loaded is None:
        try:
            loaded = await run_in_threadpool(gateway.cache.resolve, model, version)
        except ModelUnavailable as exc:
            raise ApiError(exc.status, exc.message) from None
    return Response(answer(gateway, loaded, instances), media_type="application/json")


# The ':' routes come before GET /v1/models/{model} is registered (admin router), so
# `/v1/models/zombies:predict` is never read as a model named "zombies:predict".
@router.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS,
             summary="Predict with a model named in the body (default or pinned version)")
async def predict(body: PredictRequest, request: Request):
    try:
        model, version = parse_model_spec(body.model)
    except ModelUnavailable as exc:
        raise ApiError(exc.status, exc.message) from None
    return await predict_instances(request, model, version, body.instances)


@router.post("/v1/models/{model}:predict", response_model=PredictResponse,
             responses=_ERRORS, summary="Predict with a model's default version")
async def predict_default(model: Annotated[str, MODEL_PATH], body: InstancesRequest,
                          request: Request):
    return await predict_instances(request, model, None, body.instances)


@router.post("/v1/models/{model}/versions/{version}:predict",
             response_model=PredictResponse, responses=_ERRORS,
             summary="Predict with a pinned version")
async def predict_version(model: Annotated[str, MODEL_PATH],
                          version: Annotated[str, VERSION_PATH], body: InstancesRequest,
                          request: Request):
    return await predict_instances(request, model, version, body.instances)
