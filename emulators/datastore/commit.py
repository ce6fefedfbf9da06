"""Commit: check a batch of mutations, then apply all of them or none.

Checks, with Datastore's status codes: at most 500 mutations; no two mutations of
the same key ("a commit may not contain two mutations of the same key",
INVALID_ARGUMENT); valid, complete keys (insert and upsert may leave the last id
out: it is allocated and returned in ``mutation_results``); entities of at most
1 MiB; indexed strings of at most 1500 bytes. Against stored data: insert of an
existing key is ALREADY_EXISTS, update of a missing key is NOT_FOUND, and a
``base_version`` / ``update_time`` precondition that no longer holds skips the
mutation with ``conflict_detected``. Every entity written gets the commit's version.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from emulators.datastore.errors import DatastoreError, invalid, unimplemented
from emulators.datastore.keys import (Partition, check_key, describe,
                                      encode_path, is_complete, normalize_key,
                                      partition_of)
from emulators.datastore.protos import MutationResult
from emulators.datastore.store import Store, Write
from emulators.datastore.timestamps import set_timestamp
from emulators.datastore.values import MAX_INDEXED_BYTES, check_indexed_sizes

__all__ = ["prepare", "apply", "Planned", "MAX_MUTATIONS", "MAX_ENTITY_BYTES"]

_LOGGER = logging.getLogger(__name__)

MAX_MUTATIONS = 500  # Datastore's limit per commit
MAX_ENTITY_BYTES = 1_048_572  # Datastore's entity size limit (1 MiB minus 4 bytes)


@dataclass
class Planned:
    """One checked mutation: operation, normalized key or entity, precondition."""

    op: str  # insert | update | upsert | delete
    key: object  # Key (for puts: the entity's key, filled in on allocation)
    entity: object | None
    allocate: bool
    base_version: int | None
    update_us: int | None
    mask: list | None
    path: bytes | None = None  # encoded key path, once the key is complete
    partition: Partition | None = None  # of the key, once known


def prepare(mutations, project: str, database: str) -> list[Planned]:
    """Check mutations without touching stored data."""
    if len(mutations) > MAX_MUTATIONS:
        raise invalid(f"a commit may hold at most {MAX_MUTATIONS} mutations, got "
                      f"{len(mutations)}: split it into several commits")
    planned, seen = [], set()
    for index, mutation in enumerate(mutations):
        op = mutation.WhichOneof("operation")
        what = f"mutation {index} ({op})"
        if op is None:
            raise invalid(f"mutation {index} has no operation: set insert, update, "
                          f"upsert or delete")
        if mutation.property_transforms:
            raise unimplemented(f"{what}: property_transforms are not supported by the "
                                f"local Datastore emulator")
        entity = None
        if op == "delete":
            key = mutation.delete
        else:
            entity = getattr(mutation, op)
            key = entity.key
        check_key(key, allow_incomplete=op in ("insert", "upsert"), what=f"{what} key")
        normalize_key(key, project, database)
        if entity is not None:
            size = entity.ByteSize()
            if size > MAX_ENTITY_BYTES:
                raise invalid(f"{what}: entity {describe(key)} is {size} bytes, larger "
                              f"than Datastore's limit of {MAX_ENTITY_BYTES} bytes: "
                              f"store large data elsewhere (e.g. Cloud Storage)")
            if size > MAX_INDEXED_BYTES:   # else no value in it can be that long
                check_indexed_sizes(entity, f"{what} {describe(key)}")
        complete = is_complete(key)
        path = part = None
        if complete:
            path = encode_path(key.path)
            part = partition_of(key)
            ident = (part, path)
            if ident in seen:
                raise invalid(f"a commit may not contain two mutations of the same key "
                              f"({describe(key)}): deduplicate the mutations")
            seen.add(ident)
        which = mutation.WhichOneof("conflict_detection_strategy")
        update_us = None
        if which == "update_time":
            stamp = mutation.update_time
            update_us = stamp.seconds * 1_000_000 + stamp.nanos // 1000
        planned.append(Planned(
            op=op, key=key, entity=entity, allocate=not complete,
            base_version=mutation.base_version if which == "base_version" else None,
            update_us=update_us,
            mask=list(mutation.property_mask.paths) if mutation.HasField("property_mask")
            else None, path=path, partition=part))
    return planned


def _allocate(store: Store, planned: list[Planned]) -> None:
    todo = [p for p in planned if p.allocate]
    if todo:
        for item, new_id in zip(todo, store.allocate_ids(len(todo))):
            item.key.path[-1].id = new_id
            item.path = encode_path(item.key.path)
    # Allocated ids must never land on a key a client chose itself.
    chosen = [e.id for p in planned if not p.allocate for e in p.key.path
              if e.WhichOneof("id_type") == "id"]
    if chosen:
        store.reserve_ids(max(chosen))


def _masked(entity, stored_bytes: bytes | None, mask: list, entity_type):
    """The stored entity with only the masked top-level properties replaced."""
    merged = entity_type()
    if stored_bytes is not None:
        merged.ParseFromString(stored_bytes)
    merged.key.CopyFrom(entity.key)
    for path in mask:
        name = path.split(".", 1)[0]
        if name in entity.properties:
            merged.properties[name].CopyFrom(entity.properties[name])
        elif name in merged.properties:
            del merged.properties[name]
    return merged


def apply(store: Store, planned: list[Planned], version: int, commit_us: int):
    """Check against stored data and write; returns (MutationResults, identities).

    Call with ``store.lock`` held and ``version, commit_us = store.next_commit()``.
    """
    _allocate(store, planned)
    by_partition: dict[Partition, list[bytes]] = {}
    paths = []
    for item in planned:
        part = item.partition or partition_of(item.key)
        paths.append((part, item.path))
        by_partition.setdefault(part, []).append(item.path)
    stored = {}
    for part, part_paths in by_partition.items():
        for path, row in store.get_many(part, part_paths).items():
            stored[(part, path)] = row
    writes, results = [], []
    commit_time = Timestamp()
    set_timestamp(commit_time, commit_us)
    for item, ident in zip(planned, paths):
        row = stored.get(ident)
        if item.op == "insert" and row is not None:
            raise DatastoreError(grpc.StatusCode.ALREADY_EXISTS,
                                 f"entity already exists: {describe(item.key)} (insert "
                                 f"refuses existing keys; use upsert to overwrite)")
        if item.op == "update" and row is None:
            raise DatastoreError(grpc.StatusCode.NOT_FOUND,
                                 f"no entity to update: {describe(item.key)} does not "
                                 f"exist (use upsert or insert to create it)")
        result = MutationResult()
        results.append(result)
        current_version = row.version if row is not None else 0
        if ((item.base_version is not None and item.base_version != current_version)
                or (item.update_us is not None
                    and item.update_us != (row.update_us if row is not None else 0))):
            result.conflict_detected = True
            result.version = current_version
            continue
        if item.allocate:
            result.key.CopyFrom(item.key)
        result.version = version
        result.update_time.CopyFrom(commit_time)
        kind = item.key.path[-1].kind
        if item.op == "delete":
            writes.append(Write(ident[0], kind, ident[1], None, 0))
            continue
        entity = item.entity
        if item.mask is not None:
            entity = _masked(entity, row.entity if row else None, item.mask, type(entity))
        if row is None:
            create_us = commit_us
            result.create_time.CopyFrom(commit_time)
        else:
            create_us = row.create_us
            set_timestamp(result.create_time, create_us)
        writes.append(Write(ident[0], kind, ident[1], entity.SerializeToString(),
                            create_us))
    if writes:
        store.apply(writes, version, commit_us)
    return results, [(w.partition, w.path) for w in writes]
