"""Raw protobuf classes of ``google.datastore.v1``, taken from the official client.

The client ships its messages as proto-plus wrappers; the emulator works on the raw
protobuf classes underneath (``Type.pb()``), which parse and build much faster.
"""
from __future__ import annotations

from google.cloud.datastore_v1 import types as _types

__all__ = [
    "AggregationResult", "AggregationResultBatch", "ArrayValue", "Entity",
    "EntityResult", "Key", "MoreResults", "Mutation", "MutationResult", "PartitionId",
    "PropertyFilter", "PropertyOrder", "CompositeFilter", "Query", "QueryResultBatch",
    "ReadOptions", "TransactionOptions", "Value", "SERVICE", "METHOD_TYPES",
]

Entity = _types.Entity.pb()
Key = _types.Key.pb()
Value = _types.Value.pb()
ArrayValue = _types.ArrayValue.pb()
PartitionId = _types.PartitionId.pb()
Query = _types.Query.pb()
PropertyFilter = _types.PropertyFilter.pb()
CompositeFilter = _types.CompositeFilter.pb()
PropertyOrder = _types.PropertyOrder.pb()
EntityResult = _types.EntityResult.pb()
QueryResultBatch = _types.QueryResultBatch.pb()
MoreResults = QueryResultBatch.MoreResultsType
AggregationResult = _types.AggregationResult.pb()
AggregationResultBatch = _types.AggregationResultBatch.pb()
Mutation = _types.Mutation.pb()
MutationResult = _types.MutationResult.pb()
ReadOptions = _types.ReadOptions.pb()
TransactionOptions = _types.TransactionOptions.pb()

SERVICE = "google.datastore.v1.Datastore"

# Method -> (request type, response type), as in the client's transports/grpc.py.
METHOD_TYPES = {
    "Lookup": (_types.LookupRequest, _types.LookupResponse),
    "RunQuery": (_types.RunQueryRequest, _types.RunQueryResponse),
    "RunAggregationQuery": (_types.RunAggregationQueryRequest,
                            _types.RunAggregationQueryResponse),
    "BeginTransaction": (_types.BeginTransactionRequest, _types.BeginTransactionResponse),
    "Commit": (_types.CommitRequest, _types.CommitResponse),
    "Rollback": (_types.RollbackRequest, _types.RollbackResponse),
    "AllocateIds": (_types.AllocateIdsRequest, _types.AllocateIdsResponse),
    "ReserveIds": (_types.ReserveIdsRequest, _types.ReserveIdsResponse),
}
