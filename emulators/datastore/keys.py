"""Datastore keys: validation, and an encoding whose byte order is Datastore's key order.

A key path ``[(kind, id|name), ...]`` is encoded element by element. Kinds and names
are UTF-8 with ``0x00`` escaped and a ``00 01`` terminator; ids are 8 big-endian
bytes after a ``01`` tag, names follow a ``02`` tag, so ids sort before names, ids
numerically, and a parent sorts just before its descendants, which all start with
the parent's encoding. SQLite compares BLOBs with ``memcmp``, so an ancestor query
is a path range and ``ORDER BY path`` is key order.
"""
from __future__ import annotations

import logging
import re
from typing import NamedTuple

from emulators.datastore.errors import invalid
from emulators.datastore.protos import Key

__all__ = [
    "Partition", "encode_path", "descendants_upper_bound", "describe", "is_complete",
    "identity", "new_key", "normalize_key", "partition_of", "check_key", "MAX_ID",
]

_LOGGER = logging.getLogger(__name__)

_ESCAPE = b"\x00\xff"
_TERMINATOR = b"\x00\x01"
_ID_TAG = b"\x01"
_NAME_TAG = b"\x02"
# No element encoding starts with 0xff (UTF-8 never contains it), so appending it to
# an encoded path bounds every descendant of that path from above.
_AFTER_DESCENDANTS = b"\xff"

MAX_ID = (1 << 63) - 1  # ids are positive int64
MAX_PATH_ELEMENTS = 100  # Datastore's limit on key depth
MAX_KEY_PART_BYTES = 1500  # kinds and names are indexed strings
_RESERVED = re.compile(r"^__.*__$")  # __Stat_Kind__, __key__ ...: Datastore's own names


class Partition(NamedTuple):
    """Where keys live: project, database (``""`` = default) and namespace."""

    project: str
    database: str
    namespace: str


def _escaped(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\x00", _ESCAPE) + _TERMINATOR


def encode_path(path) -> bytes:
    """The order-preserving encoding of a complete key path (``Key.path``)."""
    out = []
    for element in path:
        out.append(_escaped(element.kind))
        which = element.WhichOneof("id_type")
        if which == "id":
            out.append(_ID_TAG + element.id.to_bytes(8, "big"))
        elif which == "name":
            out.append(_NAME_TAG + _escaped(element.name))
        else:
            raise invalid(f"key path element {element.kind!r} has neither id nor name: "
                          f"only the last element of a key to be allocated may be "
                          f"incomplete")
    return b"".join(out)


def descendants_upper_bound(encoded: bytes) -> bytes:
    """Exclusive upper bound of ``encoded`` and all its descendants."""
    return encoded + _AFTER_DESCENDANTS


def is_complete(key) -> bool:
    return bool(key.path) and key.path[-1].WhichOneof("id_type") is not None


def describe(key) -> str:
    """``Kind(5)/Child('name')`` plus the namespace, for error messages."""
    parts = []
    for element in key.path:
        which = element.WhichOneof("id_type")
        ident = (str(element.id) if which == "id"
                 else repr(element.name) if which == "name" else "<incomplete>")
        parts.append(f"{element.kind}({ident})")
    namespace = key.partition_id.namespace_id
    return "/".join(parts) + (f" in namespace {namespace!r}" if namespace else "")


def partition_of(key) -> Partition:
    p = key.partition_id
    return Partition(p.project_id, p.database_id, p.namespace_id)


def identity(key) -> tuple[Partition, bytes]:
    """A hashable identity of a complete, normalized key."""
    return partition_of(key), encode_path(key.path)


def normalize_key(key, project: str, database: str):
    """Fill in the request's project and database where the key leaves them empty.

    Keys from another project or database are refused, as Datastore does.
    """
    partition = key.partition_id
    if partition.project_id and partition.project_id != project:
        raise invalid(f"key {describe(key)} is in project {partition.project_id!r} but "
                      f"the request is for project {project!r}: use keys of the "
                      f"request's project")
    if partition.database_id and partition.database_id != database:
        raise invalid(f"key {describe(key)} is in database {partition.database_id!r} "
                      f"but the request is for database {database!r}")
    partition.project_id = project
    partition.database_id = database
    return key


def check_key(key, *, allow_incomplete: bool, allow_reserved: bool = False,
              what: str = "key") -> None:
    """Raise INVALID_ARGUMENT if ``key`` breaks Datastore's rules for keys."""
    if not key.path:
        raise invalid(f"{what} has an empty path: give at least one (kind, id or name)")
    if len(key.path) > MAX_PATH_ELEMENTS:
        raise invalid(f"{what} {describe(key)} has {len(key.path)} path elements, more "
                      f"than Datastore's {MAX_PATH_ELEMENTS}")
    last = len(key.path) - 1
    for index, element in enumerate(key.path):
        if not element.kind:
            raise invalid(f"{what} {describe(key)} has an empty kind")
        if len(element.kind.encode("utf-8")) > MAX_KEY_PART_BYTES:
            raise invalid(f"{what} has a kind longer than {MAX_KEY_PART_BYTES} bytes")
        if not allow_reserved and _RESERVED.match(element.kind):
            raise invalid(f"{what} {describe(key)} uses the reserved kind "
                          f"{element.kind!r}: kinds named __*__ belong to Datastore")
        which = element.WhichOneof("id_type")
        if which is None:
            if index != last or not allow_incomplete:
                raise invalid(f"{what} {describe(key)} is incomplete: give an id or a "
                              f"name (only insert/upsert and AllocateIds take "
                              f"incomplete keys)")
        elif which == "id":
            if not 0 < element.id <= MAX_ID:
                raise invalid(f"{what} {describe(key)} has id {element.id}: ids must be "
                              f"between 1 and {MAX_ID}")
        else:
            if not element.name:
                raise invalid(f"{what} {describe(key)} has an empty name")
            if len(element.name.encode("utf-8")) > MAX_KEY_PART_BYTES:
                raise invalid(f"{what} has a name longer than {MAX_KEY_PART_BYTES} bytes")
            if not allow_reserved and _RESERVED.match(element.name):
                raise invalid(f"{what} {describe(key)} uses the reserved name "
                              f"{element.name!r}: names matching __*__ are reserved")


def new_key(partition: Partition, *elements) -> "Key":
    """A key in ``partition`` from ``(kind, id_or_name)`` pairs (for virtual entities)."""
    key = Key()
    key.partition_id.project_id = partition.project
    key.partition_id.database_id = partition.database
    key.partition_id.namespace_id = partition.namespace
    for kind, ident in elements:
        element = key.path.add(kind=kind)
        if isinstance(ident, int):
            element.id = ident
        else:
            element.name = ident
    return key
