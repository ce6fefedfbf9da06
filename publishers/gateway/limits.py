"""Refuse oversized request bodies before anything reads or parses them.

A pure ASGI middleware (no per-request task or buffering for ordinary requests): a
``Content-Length`` over the limit is answered 413 at once, without reading the body;
a body without a length (chunked) is read up to the limit and refused as soon as it
passes it. The HTTP server enforces that a body is no longer than its
``Content-Length``, so a declared length within the limit needs no counting.
"""
from __future__ import annotations

import json
import logging

from publishers.gateway.errors import STATUS_NAMES

__all__ = ["BodySizeLimit", "DEFAULT_MAX_BODY_BYTES"]

_LOGGER = logging.getLogger(__name__)

# Google ML Engine's online prediction takes request bodies up to 1.5 MB; a client
# written for it never needs more, and a worker never parses more.
DEFAULT_MAX_BODY_BYTES = 1_500_000


class BodySizeLimit:
    """ASGI middleware answering 413 to bodies over ``max_bytes``."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        if max_bytes < 1:
            raise ValueError(f"max_bytes={max_bytes} must be positive")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            if not declared.isdigit():
                await _refuse(send, 400, f"Content-Length {declared[:40]!r} is not a "
                                         "number of bytes")
                return
            if int(declared) > self.max_bytes:
                await _refuse(send, 413, self._too_large(f"{int(declared)} bytes"))
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        # No length given: read (at most max_bytes + 1) now, then replay it.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await _refuse(send, 413, self._too_large(f"more than {self.max_bytes} bytes"))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive():
            if replay:
                return replay.pop()
            return await receive()

        await self.app(scope, replay_receive, send)

    def _too_large(self, what: str) -> str:
        return (f"request body of {what} is over the {self.max_bytes}-byte limit; "
                "send fewer instances or events per request")


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": {"code": status, "status": STATUS_NAMES[status],
                                 "message": message}}).encode("utf-8")
    _LOGGER.info("refused status=%d reason=%s", status, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
