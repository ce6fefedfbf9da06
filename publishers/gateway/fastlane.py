"""The fast lane: answer the common predict request before FastAPI's machinery.

Measured in-process, FastAPI's per-request work (dependency solving, request and
response objects, the route's exception and context layers) costs ~4x what the
prediction itself does for one row of a tree. This ASGI middleware serves exactly
the requests that need none of it: a ``POST`` to one of the three predict paths whose
body is valid for the route's schema (the same pydantic models, parsed straight from
the JSON bytes) and whose model version is already loaded. Its answer is made by the
same :func:`publishers.gateway.predict.answer` as the FastAPI routes, byte for byte.

Anything else — an invalid body, an unknown or unloaded model, a wrong feature count,
any other path or method — is handed to the FastAPI app unchanged (the body
replayed), so every error and every registry read has one code path, the routes'.
"""
from __future__ import annotations

import logging
import re

from pydantic import ValidationError

from publishers.gateway.errors import ApiError
from publishers.gateway.models import ModelUnavailable, parse_model_spec
from publishers.gateway.predict import MODEL_PATTERN, VERSION_PATTERN, answer
from publishers.gateway.schemas import InstancesRequest, PredictRequest

__all__ = ["PredictFastLane"]

_LOGGER = logging.getLogger(__name__)

_MODEL = MODEL_PATTERN.strip("^$")
_VERSION = VERSION_PATTERN.strip("^$")
_DEFAULT_PATH = re.compile(rf"^/v1/models/({_MODEL}):predict$")
_VERSION_PATH = re.compile(rf"^/v1/models/({_MODEL})/versions/({_VERSION}):predict$")
_HEADERS = [(b"content-type", b"application/json")]


class PredictFastLane:
    """ASGI middleware; ``gateway`` is the :class:`~publishers.gateway.service.Gateway`
    whose cache and memory the routes use."""

    def __init__(self, app, gateway):
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        route = _route(path)
        if route is None:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        payload = self._serve(route, body)
        if payload is None:
            await self.app(scope, _replay(body, receive), send)
            return
        self.gateway.fast_answers += 1
        await send({"type": "http.response.start", "status": 200,
                    "headers": _HEADERS + [(b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    def _serve(self, route, body: bytes) -> bytes | None:
        """The answer's bytes, or None to let the routes handle the request."""
        in_body, model, version = route
        try:
            if in_body:
                request = PredictRequest.model_validate_json(body)
                model, version = parse_model_spec(request.model)
            else:
                request = InstancesRequest.model_validate_json(body)
        except (ValidationError, ModelUnavailable):
            return None
        loaded = self.gateway.cache.cached(model, version)
        if loaded is None:
            return None
        try:
            return answer(self.gateway, loaded, request.instances)
        except ApiError:
            return None


def _route(path: str) -> tuple[bool, str | None, str | None] | None:
    """``(model named in the body, model, version)`` for a predict path, else None."""
    if path == "/v1/predict":
        return True, None, None
    match = _DEFAULT_PATH.match(path)
    if match:
        return False, match.group(1), None
    match = _VERSION_PATH.match(path)
    if match:
        return False, match.group(1), match.group(2)
    return None


def _replay(body: bytes, receive):
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        if pending:
            return pending.pop()
        return await receive()

    return replay
