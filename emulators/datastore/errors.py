"""The one error type of the Datastore emulator: a gRPC status code and a message.

Modules raise :class:`DatastoreError`; the service turns it into
``context.abort(code, message)``, so clients see the same codes as from Google
(``INVALID_ARGUMENT``, ``ALREADY_EXISTS``, ``NOT_FOUND``, ``ABORTED``, ...).
"""
from __future__ import annotations

import grpc

__all__ = ["DatastoreError", "invalid", "unimplemented"]


class DatastoreError(Exception):
    """A request the emulator refuses, with the status code Google would answer."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> DatastoreError:
    return DatastoreError(grpc.StatusCode.INVALID_ARGUMENT, message)


def unimplemented(message: str) -> DatastoreError:
    return DatastoreError(grpc.StatusCode.UNIMPLEMENTED, message)
