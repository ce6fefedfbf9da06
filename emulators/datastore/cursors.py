"""Result positions and query cursors.

Every result row has a *position*: one component per sort order (descending ones
wrapped in :class:`Desc`), then the entity's key as the tie-break, then the
projected values when a projection gives one entity several rows. Positions
compare as plain tuples, so sorting, "after the start cursor" and "up to the end
cursor" are tuple comparisons.

A cursor is the position written down as the *values* it was made from (an
``ArrayValue``: order values, the key, projected values), so it stays valid while
data changes: a query resumed from it continues after that point, as in Datastore.
"""
from __future__ import annotations

import hashlib
import logging

from google.protobuf.message import DecodeError

from emulators.datastore.errors import invalid
from emulators.datastore.keys import encode_path
from emulators.datastore.protos import ArrayValue, Value
from emulators.datastore.values import index_values, key_value, sort_key

__all__ = ["Desc", "KEY_PROPERTY", "SCATTER_PROPERTY", "position", "encode_cursor",
           "decode_cursor", "order_value"]

_LOGGER = logging.getLogger(__name__)

KEY_PROPERTY = "__key__"
# Datastore's hidden property for sampling split points (Beam's query splitter orders
# by it). The emulator gives every entity a stable pseudo-random scatter value.
SCATTER_PROPERTY = "__scatter__"
_CURSOR_MAGIC = b"rwdc1"  # marks (and versions) cursors made by this emulator


class Desc:
    """Wraps a sort component so that it sorts in reverse."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return other.value < self.value

    def __le__(self, other):
        return other.value <= self.value

    def __gt__(self, other):
        return other.value > self.value

    def __ge__(self, other):
        return other.value >= self.value

    def __eq__(self, other):
        return self.value == other.value

    def __ne__(self, other):
        return self.value != other.value

    __hash__ = None


def scatter(path: bytes) -> int:
    """The stable pseudo-random ``__scatter__`` value of an entity (int64 >= 0)."""
    return int.from_bytes(hashlib.blake2b(path, digest_size=8).digest(), "big") >> 1


def order_value(entity, path: bytes, name: str, descending: bool, projected):
    """``(sort component, Value)`` an entity sorts by for one order, or None.

    An array sorts by its smallest element ascending and its largest descending;
    an entity without an indexed value for ``name`` has no place in the order.
    """
    if name == KEY_PROPERTY:
        return path, None
    if name == SCATTER_PROPERTY:
        return scatter(path), None
    if projected is not None and name in projected:
        value = projected[name]
        return sort_key(value), value
    values = index_values(entity, name)
    if not values:
        return None
    keyed = [(sort_key(v), i) for i, v in enumerate(values)]
    best = max(keyed) if descending else min(keyed)
    return best[0], values[best[1]]


def position(orders, tiebreak_desc: bool, projection, entity, path: bytes, projected):
    """The row's position tuple, or None if the row has no place in the orders."""
    parts = []
    for name, descending in orders:
        found = order_value(entity, path, name, descending, projected)
        if found is None:
            return None
        parts.append(Desc(found[0]) if descending else found[0])
    parts.append(Desc(path) if tiebreak_desc else path)
    if projected is not None:
        parts.append(tuple(sort_key(projected[name]) for name in projection))
    return tuple(parts)


def encode_cursor(orders, projection, entity, path: bytes, projected) -> bytes:
    """The cursor just after this row."""
    cursor = ArrayValue()
    for name, descending in orders:
        _, value = order_value(entity, path, name, descending, projected)
        if name == KEY_PROPERTY:
            value = key_value(entity.key)
        elif name == SCATTER_PROPERTY:
            value = Value(integer_value=scatter(path))
        cursor.values.append(value)
    cursor.values.append(key_value(entity.key))
    if projected is not None:
        cursor.values.extend(projected[name] for name in projection)
    return _CURSOR_MAGIC + cursor.SerializeToString()


def decode_cursor(data: bytes, orders, tiebreak_desc: bool, projection, what: str):
    """The position a cursor stands for, checked against the query's shape."""
    if not data.startswith(_CURSOR_MAGIC):
        raise invalid(f"{what} is not a cursor of this emulator: pass back the "
                      f"end_cursor (or a result's cursor) of the same query")
    try:
        values = ArrayValue.FromString(data[len(_CURSOR_MAGIC):]).values
    except DecodeError as exc:
        raise invalid(f"{what} is corrupt ({exc}): pass back a cursor unchanged") from exc
    expected = len(orders) + 1 + (len(projection) if projection else 0)
    key_at = len(orders)
    if len(values) != expected or values[key_at].WhichOneof("value_type") != "key_value":
        raise invalid(f"{what} belongs to a query with other sort orders or projection: "
                      f"use cursors only with the query that made them")
    parts = []
    for value, (name, descending) in zip(values, orders):
        if name == KEY_PROPERTY:
            part = encode_path(value.key_value.path)
        elif name == SCATTER_PROPERTY:
            part = value.integer_value
        else:
            part = sort_key(value)
        parts.append(Desc(part) if descending else part)
    path = encode_path(values[len(orders)].key_value.path)
    parts.append(Desc(path) if tiebreak_desc else path)
    if projection:
        parts.append(tuple(sort_key(v) for v in values[len(orders) + 1:]))
    return tuple(parts)
