"""Datastore's built-in kinds, computed on demand: statistics and metadata.

Beam's ``ReadFromDatastore`` sizes its splits from ``__Stat_Total__`` (newest
``timestamp``) and then ``__Stat_Kind__`` filtered on ``kind_name`` and that same
``timestamp``; the namespaced variants are ``__Stat_Ns_Total__`` and
``__Stat_Ns_Kind__``. Google refreshes statistics about daily; here they are exact,
and their ``timestamp`` is the time of the last commit, so two queries in a row
agree on it. ``__kind__`` and ``__namespace__`` list kinds and namespaces.

Virtual entities are returned as :class:`~emulators.datastore.store.Row` so the
query engine filters, sorts and pages them like stored ones.
"""
from __future__ import annotations

import logging

from emulators.datastore.keys import Partition, encode_path, new_key
from emulators.datastore.protos import Entity
from emulators.datastore.store import Row, Store
from emulators.datastore.timestamps import set_timestamp

__all__ = ["VIRTUAL_KINDS", "virtual_rows"]

_LOGGER = logging.getLogger(__name__)

_TOTAL_NAME = "total_entity_usage"  # the key name Google gives total statistics
_DEFAULT_NAMESPACE_ID = 1  # __namespace__ names the default namespace by id 1

VIRTUAL_KINDS = frozenset({"__Stat_Total__", "__Stat_Ns_Total__", "__Stat_Kind__",
                           "__Stat_Ns_Kind__", "__kind__", "__namespace__"})


def _entity(key, commit_us: int, **properties) -> Entity:
    entity = Entity()
    entity.key.CopyFrom(key)
    for name, value in properties.items():
        target = entity.properties[name]
        if isinstance(value, str):
            target.string_value = value
        else:
            target.integer_value = value
    if commit_us:
        set_timestamp(entity.properties["timestamp"].timestamp_value, commit_us)
    return entity


def _stat_entities(kind: str, partition: Partition, usage, commit_us: int) -> list:
    namespaced = kind.startswith("__Stat_Ns_")
    if namespaced:
        usage = [u for u in usage if u.namespace == partition.namespace]
    if not usage:
        return []  # Datastore has no statistics for an empty database either
    if kind.endswith("_Total__"):
        count = sum(u.count for u in usage)
        size = sum(u.entity_bytes for u in usage)
        return [_entity(new_key(partition, (kind, _TOTAL_NAME)), commit_us, count=count,
                        bytes=size, entity_bytes=size, builtin_index_bytes=0,
                        builtin_index_count=0, composite_index_bytes=0,
                        composite_index_count=0)]
    per_kind: dict[str, list[int]] = {}
    for u in usage:
        totals = per_kind.setdefault(u.kind, [0, 0])
        totals[0] += u.count
        totals[1] += u.entity_bytes
    return [_entity(new_key(partition, (kind, name)), commit_us, kind_name=name,
                    count=count, bytes=size, entity_bytes=size, builtin_index_bytes=0,
                    builtin_index_count=0, composite_index_bytes=0,
                    composite_index_count=0)
            for name, (count, size) in sorted(per_kind.items())]


def virtual_rows(store: Store, partition: Partition, kind: str) -> list[Row]:
    """The entities of built-in ``kind`` in ``partition``, in key order."""
    usage = store.usage(partition.project, partition.database)
    commit_us = store.last_commit_us
    if kind.startswith("__Stat_"):
        entities = _stat_entities(kind, partition, usage, commit_us)
    elif kind == "__kind__":
        names = sorted({u.kind for u in usage if u.namespace == partition.namespace})
        entities = [_entity(new_key(partition, (kind, name)), 0) for name in names]
    else:  # __namespace__ lives in the default namespace
        root = Partition(partition.project, partition.database, "")
        names = sorted({u.namespace for u in usage})
        entities = [_entity(new_key(root, (kind, name or _DEFAULT_NAMESPACE_ID)), 0)
                    for name in names]
    rows = [Row(encode_path(e.key.path), e.SerializeToString(), store.version,
                commit_us, commit_us) for e in entities]
    rows.sort(key=lambda row: row.path)
    return rows
