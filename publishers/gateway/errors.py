"""Errors as Google's APIs shape them: ``{"error": {"code", "status", "message"}}``.

Every refusal names the problem and, where there is one, the fix. Validation errors
from the request schema become 422 with the failing location spelled like a path into
the body (``instances[0][2]``). Anything unexpected is logged with a traceback and
answered 500 without internals; tests fuzz the API so that this never happens for any
input.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "ErrorBody", "error_response", "install_error_handlers",
           "describe_validation_errors", "STATUS_NAMES"]

_LOGGER = logging.getLogger(__name__)

# Google's canonical status names for the HTTP codes the gateway answers with.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "FAILED_PRECONDITION",
    413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT", 422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# An error message quotes at most this much of a bad value.
_QUOTE_CHARS = 60


class ApiError(Exception):
    """Answer ``status`` with ``message``; raised anywhere in a request's handling."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class _ErrorDetail(BaseModel):
    code: int
    status: str
    message: str


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: _ErrorDetail


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"code": status, "status": STATUS_NAMES.get(status, "UNKNOWN"),
                      "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "body":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def describe_validation_errors(errors: list[dict[str, Any]], limit: int = 5) -> str:
    """One readable line per problem: ``instances[0][1]: Input should be a valid number
    (got 'x')``."""
    lines = []
    for err in errors[:limit]:
        where = _location(tuple(err.get("loc", ())))
        message = err.get("msg", "is invalid")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            message = f"the body is not valid JSON ({ctx.get('error', 'parse error')})"
            where = "body"
        elif "input" in err and err.get("type") not in ("missing", "extra_forbidden"):
            shown = repr(err["input"])
            if len(shown) > _QUOTE_CHARS:
                shown = shown[:_QUOTE_CHARS] + "..."
            message += f" (got {shown})"
        lines.append(f"{where}: {message}")
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more problems")
    return "; ".join(lines)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(422, describe_validation_errors(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _pydantic_validation(request: Request, exc: ValidationError):
        return error_response(422, describe_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = (f"no route for {request.method} {request.url.path}; see /docs "
                       "for the API (e.g. POST /v1/predict)")
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        _LOGGER.exception("unhandled error method=%s path=%s", request.method,
                          request.url.path)
        return error_response(500, "internal error; the gateway logged the details")
