"""The one error type the emulator's logic raises, carrying a real gRPC status code.

The state and validation modules know nothing of gRPC contexts: they raise
:class:`ApiError`, and the service modules turn it into ``context.abort(code, msg)``,
so a client sees the same status codes Google's service would send.
"""
from __future__ import annotations

import functools
import logging

import grpc

__all__ = ["ApiError", "invalid", "not_found", "already_exists", "failed_precondition",
           "unimplemented", "abort_on_error"]

_LOGGER = logging.getLogger(__name__)


class ApiError(Exception):
    """An RPC outcome other than OK: a gRPC status code and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(kind: str, name: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND,
                    f"{kind} not found: {name!r}. Create it first, or check the name.")


def already_exists(kind: str, name: str) -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS,
                    f"{kind} already exists: {name!r}. Use it, or delete it first.")


def failed_precondition(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unimplemented(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNIMPLEMENTED, message)


def abort_on_error(method):
    """Wrap a unary handler ``method([self,] request, context)`` so that an ApiError
    aborts the RPC with its status code."""

    @functools.wraps(method)
    def handler(*args):
        context = args[-1]
        try:
            return method(*args)
        except ApiError as err:
            _LOGGER.debug("rpc=%s code=%s message=%s", method.__name__, err.code.name,
                          err.message)
            context.abort(err.code, err.message)

    return handler
