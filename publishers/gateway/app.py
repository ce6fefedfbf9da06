"""The FastAPI application: :func:`create_app` wires the parts and the routes.

FastAPI was chosen for typed validation (pydantic), an OpenAPI description generated
from the same types the handlers use, and a maintained ASGI stack that runs the same
under uvicorn locally and in a Cloud Run container.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from rotwatch.config import Settings
from publishers.gateway import admin, feedback, predict
from publishers.gateway.errors import install_error_handlers
from publishers.gateway.fastlane import PredictFastLane
from publishers.gateway.limits import BodySizeLimit
from publishers.gateway.service import Gateway, GatewayConfig

__all__ = ["create_app", "API_VERSION"]

_LOGGER = logging.getLogger(__name__)

API_VERSION = "1.0.0"
_DESCRIPTION = """\
Predictions from rotwatch's model registry and feedback on them.

* `POST /v1/predict` — `{"instances": [[2.0, 3.4, 5.1, 1.0]], "model": "zombies"}`
  (default version) or `"model": "zombies/versions/v2"` (pinned); also
  `/v1/models/{model}:predict` and `/v1/models/{model}/versions/{v}:predict`.
* `POST /v1/feedback` — `{"prediction_id": "...", "was_correct": false}`, complete
  events, or a list of either; answered 202 once Pub/Sub has them.
* `GET /v1/models`, `GET /v1/models/{model}`, `POST /v1/models/{model}:setDefault`.

Errors are `{"error": {"code", "status", "message"}}` and say what to fix.
"""


async def _refresh_defaults(gateway: Gateway) -> None:
    """Re-read the defaults now and then: a lost model-updates message costs minutes
    at most, never a restart."""
    while True:
        await asyncio.sleep(gateway.config.refresh_interval_s)
        try:
            await run_in_threadpool(gateway.cache.refresh_all)
        except Exception:  # keep refreshing; the traceback says what failed
            _LOGGER.exception("step=refresh-defaults outcome=failed")


def create_app(settings: Settings | None = None, config: GatewayConfig | None = None, *,
               registry=None, publisher=None, listener=None) -> FastAPI:
    """The gateway app. Nothing connects until the app starts (its lifespan).

    ``registry``, ``publisher`` and ``listener`` replace the parts made from
    ``settings`` (a :class:`rotwatch.registry.Registry`, a
    :class:`publishers.feedback_client.FeedbackPublisher`, a
    :class:`publishers.gateway.updates.ModelUpdateListener`).
    """
    settings = settings or Settings.from_env()
    config = config or GatewayConfig.from_env()
    gateway = Gateway(settings, config, registry=registry, publisher=publisher,
                      listener=listener)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(gateway.start)
        refresher = asyncio.create_task(_refresh_defaults(gateway))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await run_in_threadpool(gateway.stop)

    app = FastAPI(title="rotwatch gateway", version=API_VERSION, description=_DESCRIPTION,
                  lifespan=lifespan)
    app.state.gateway = gateway
    install_error_handlers(app)
    # The ':'-suffixed model routes must be registered before GET /v1/models/{model}.
    app.include_router(predict.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)

    @app.get("/healthz", tags=["health"], summary="Liveness, and the versions served")
    async def healthz(request: Request):
        return {"status": "ok" if gateway.started else "starting",
                "serving": gateway.cache.serving()}

    # Added first, so it runs inside the body size limit (the last added runs first).
    if config.fast_lane:
        app.add_middleware(PredictFastLane, gateway=gateway)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    return app
