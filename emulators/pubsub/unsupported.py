"""Services this emulator does not serve: every method answers UNIMPLEMENTED, naming it.

Without these, gRPC would answer a bare "Method not found!"; with them a caller learns
what is missing and what to do instead.
"""
from __future__ import annotations

import grpc

__all__ = ["unsupported_handlers"]

_SCHEMA_METHODS = ("CreateSchema", "GetSchema", "ListSchemas", "ListSchemaRevisions",
                   "CommitSchema", "RollbackSchema", "DeleteSchemaRevision",
                   "DeleteSchema", "ValidateSchema", "ValidateMessage")
_IAM_METHODS = ("SetIamPolicy", "GetIamPolicy", "TestIamPermissions")

_ADVICE = {
    "google.pubsub.v1.SchemaService": "schemas are not supported: validate messages in "
                                      "the publisher",
    "google.iam.v1.IAMPolicy": "IAM is not emulated: every caller may do everything",
}


def _refuse(service: str, method: str) -> grpc.RpcMethodHandler:
    message = (f"{service}/{method} is not implemented by the rotwatch Pub/Sub emulator: "
               f"{_ADVICE[service]}.")

    def behaviour(request: bytes, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    # No (de)serializers: the request stays raw bytes, no message types are needed.
    return grpc.unary_unary_rpc_method_handler(behaviour)


def unsupported_handlers() -> dict:
    return {
        "google.pubsub.v1.SchemaService": {
            m: _refuse("google.pubsub.v1.SchemaService", m) for m in _SCHEMA_METHODS},
        "google.iam.v1.IAMPolicy": {
            m: _refuse("google.iam.v1.IAMPolicy", m) for m in _IAM_METHODS},
    }
