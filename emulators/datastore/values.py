"""Property values: Datastore's cross-type order, and what an index holds.

Datastore orders values of different types by type first:
null < numbers (integers and doubles compared together, NaN lowest) < timestamps <
booleans < byte strings and text (by bytes) < keys < geo points < arrays < entities.
:func:`sort_key` maps a ``Value`` to a plain tuple with exactly that order, so
filters and sorts are tuple comparisons.

Queries only see *indexed* values: a property excluded from indexes, a missing
property, and an empty array never match a filter or an order. An array property
is indexed once per element, so a filter matches if any element matches.
"""
from __future__ import annotations

import logging
import math

from emulators.datastore.errors import invalid
from emulators.datastore.keys import encode_path
from emulators.datastore.protos import Value

__all__ = ["sort_key", "index_values", "check_indexed_sizes", "key_value",
           "MAX_INDEXED_BYTES"]

_LOGGER = logging.getLogger(__name__)

# Datastore refuses indexed strings and blobs over 1500 bytes ("exclude it from
# indexes" is the fix it suggests); longer values may be stored unindexed.
MAX_INDEXED_BYTES = 1500

_NULL, _NUMBER, _TIMESTAMP, _BOOLEAN, _STRING, _KEY, _GEO, _ARRAY, _ENTITY = range(9)


def sort_key(value) -> tuple:
    """A tuple ordering ``value`` among all Datastore values."""
    which = value.WhichOneof("value_type")
    if which == "integer_value":
        return (_NUMBER, 1, value.integer_value)
    if which == "string_value":
        return (_STRING, value.string_value.encode("utf-8"), 1)
    if which == "double_value":
        number = value.double_value
        return (_NUMBER, 0, 0) if math.isnan(number) else (_NUMBER, 1, number)
    if which == "timestamp_value":
        return (_TIMESTAMP, value.timestamp_value.seconds, value.timestamp_value.nanos)
    if which == "boolean_value":
        return (_BOOLEAN, value.boolean_value)
    if which == "key_value":
        partition = value.key_value.partition_id
        return (_KEY, partition.project_id, partition.database_id,
                partition.namespace_id, encode_path(value.key_value.path))
    if which == "blob_value":
        return (_STRING, value.blob_value, 0)
    if which == "geo_point_value":
        return (_GEO, value.geo_point_value.latitude, value.geo_point_value.longitude)
    if which == "array_value":
        return (_ARRAY, tuple(sort_key(v) for v in value.array_value.values))
    if which == "entity_value":
        properties = value.entity_value.properties
        return (_ENTITY, tuple(sorted((name, sort_key(properties[name]))
                                      for name in properties)))
    return (_NULL,)


def key_value(key) -> "Value":
    value = Value()
    value.key_value.CopyFrom(key)
    return value


def _lookup(entity, name: str) -> list:
    """Values of property ``name``; a dotted name reaches into entity values."""
    properties = entity.properties
    if name in properties:
        return [properties[name]]
    head, dot, rest = name.partition(".")
    if not dot or head not in properties:
        return []
    value = properties[head]
    containers = (value.array_value.values
                  if value.WhichOneof("value_type") == "array_value" else [value])
    found = []
    for item in containers:
        if item.WhichOneof("value_type") == "entity_value":
            found.extend(_lookup(item.entity_value, rest))
    return found


def index_values(entity, name: str) -> list:
    """The indexed values of property ``name`` (array elements one by one)."""
    if name == "__key__":
        return [key_value(entity.key)]
    out = []
    for value in _lookup(entity, name):
        if value.WhichOneof("value_type") == "array_value":
            out.extend(v for v in value.array_value.values if not v.exclude_from_indexes)
        elif not value.exclude_from_indexes:
            out.append(value)
    return out


def check_indexed_sizes(entity, what: str) -> None:
    """Refuse indexed strings and blobs longer than Datastore allows."""
    for name, value in entity.properties.items():
        items = (value.array_value.values
                 if value.WhichOneof("value_type") == "array_value" else [value])
        for item in items:
            if item.exclude_from_indexes:
                continue
            which = item.WhichOneof("value_type")
            if which == "string_value":
                size = len(item.string_value.encode("utf-8"))
            elif which == "blob_value":
                size = len(item.blob_value)
            elif which == "entity_value":
                check_indexed_sizes(item.entity_value, f"{what}, property {name!r}")
                continue
            else:
                continue
            if size > MAX_INDEXED_BYTES:
                raise invalid(
                    f"{what}: property {name!r} is {size} bytes, longer than the "
                    f"{MAX_INDEXED_BYTES} bytes Datastore indexes: exclude it from "
                    f"indexes (exclude_from_indexes=[{name!r}]) to store it")
