"""Query filters compiled to Python predicates, plus the key range SQL can apply.

A predicate takes ``(entity, encoded_path)`` and says whether the entity matches.
Property filters follow index semantics: an entity matches if any of its indexed
values for the property (each array element on its own) satisfies the operator, in
Datastore's cross-type value order. ``__key__`` filters and ``HAS_ANCESTOR`` compare
encoded paths; when they sit at the top of the filter (alone or under AND) they also
narrow the SQL scan to a path range.
"""
from __future__ import annotations

import logging
import operator
from typing import Callable

from emulators.datastore.errors import invalid
from emulators.datastore.keys import Partition, descendants_upper_bound, encode_path
from emulators.datastore.protos import CompositeFilter, PropertyFilter
from emulators.datastore.values import index_values, sort_key

__all__ = ["compile_filter", "Predicate", "KEY_PROPERTY"]

_LOGGER = logging.getLogger(__name__)

KEY_PROPERTY = "__key__"
Predicate = Callable[[object, bytes], bool]

_Op = PropertyFilter.Operator
_COMPARE = {
    _Op.Value("LESS_THAN"): operator.lt,
    _Op.Value("LESS_THAN_OR_EQUAL"): operator.le,
    _Op.Value("GREATER_THAN"): operator.gt,
    _Op.Value("GREATER_THAN_OR_EQUAL"): operator.ge,
    _Op.Value("EQUAL"): operator.eq,
    _Op.Value("NOT_EQUAL"): operator.ne,
}
_IN, _NOT_IN = _Op.Value("IN"), _Op.Value("NOT_IN")
_HAS_ANCESTOR = _Op.Value("HAS_ANCESTOR")
_AND, _OR = CompositeFilter.Operator.Value("AND"), CompositeFilter.Operator.Value("OR")
# Appended to an encoded path: just above the path itself, below all its descendants.
_JUST_AFTER = b"\x00"


def compile_filter(filter_pb, partition: Partition, project: str, database: str
                   ) -> tuple[Predicate | None, bytes | None, bytes | None]:
    """``(predicate or None, low, high)``: SQL may scan ``low <= path < high``."""
    which = filter_pb.WhichOneof("filter_type")
    if which is None:
        return None, None, None
    context = _Context(partition, project, database)
    predicate = context.compile(filter_pb, top_level=True)
    return predicate, context.low, context.high


class _Context:
    def __init__(self, partition: Partition, project: str, database: str):
        self.partition = partition
        self.project = project
        self.database = database
        self.low: bytes | None = None
        self.high: bytes | None = None

    def narrow(self, low: bytes | None, high: bytes | None) -> None:
        if low is not None and (self.low is None or low > self.low):
            self.low = low
        if high is not None and (self.high is None or high < self.high):
            self.high = high

    def compile(self, filter_pb, top_level: bool) -> Predicate:
        which = filter_pb.WhichOneof("filter_type")
        if which == "composite_filter":
            return self._composite(filter_pb.composite_filter, top_level)
        if which == "property_filter":
            return self._property(filter_pb.property_filter, top_level)
        raise invalid("a filter inside a composite filter is empty: give a property "
                      "filter or a composite filter")

    def _composite(self, composite, top_level: bool) -> Predicate:
        if composite.op not in (_AND, _OR):
            raise invalid(f"composite filter operator {composite.op} is not AND or OR")
        parts = [self.compile(f, top_level and composite.op == _AND)
                 for f in composite.filters]
        if not parts:
            return lambda entity, path: True
        if composite.op == _AND:
            return lambda entity, path: all(p(entity, path) for p in parts)
        return lambda entity, path: any(p(entity, path) for p in parts)

    def _property(self, prop_filter, top_level: bool) -> Predicate:
        name = prop_filter.property.name
        op = prop_filter.op
        if not name:
            raise invalid("a property filter has no property name: set property.name")
        if name == KEY_PROPERTY:
            return self._key_filter(op, prop_filter.value, top_level)
        if op == _HAS_ANCESTOR:
            raise invalid(f"HAS_ANCESTOR applies to __key__, not to property {name!r}")
        if op in (_IN, _NOT_IN):
            targets = frozenset(sort_key(v) for v in _array(prop_filter.value, name))
            wanted = op == _IN
            return lambda entity, path: any(
                (sort_key(v) in targets) == wanted for v in index_values(entity, name))
        compare = _COMPARE.get(op)
        if compare is None:
            raise invalid(f"filter operator {op} on property {name!r} is not supported: "
                          f"use one of < <= > >= = != IN NOT_IN")
        target = sort_key(prop_filter.value)
        return lambda entity, path: any(
            compare(sort_key(v), target) for v in index_values(entity, name))

    # -- __key__ and ancestors ----------------------------------------------------------
    def _path_of(self, value, what: str) -> bytes:
        if value.WhichOneof("value_type") != "key_value":
            raise invalid(f"{what} needs a key value, got "
                          f"{value.WhichOneof('value_type') or 'nothing'}")
        key = value.key_value
        part = key.partition_id
        if ((part.project_id or self.project) != self.partition.project
                or (part.database_id or self.database) != self.partition.database
                or part.namespace_id != self.partition.namespace):
            raise invalid(f"{what} uses a key in namespace {part.namespace_id!r} of "
                          f"project {part.project_id!r}, but the query runs in namespace "
                          f"{self.partition.namespace!r} of project "
                          f"{self.partition.project!r}: use a key of the query's partition")
        return encode_path(key.path)

    def _key_filter(self, op, value, top_level: bool) -> Predicate:
        if op == _HAS_ANCESTOR:
            ancestor = self._path_of(value, "HAS_ANCESTOR")
            if top_level:
                self.narrow(ancestor, descendants_upper_bound(ancestor))
            return lambda entity, path: path.startswith(ancestor)
        if op in (_IN, _NOT_IN):
            targets = frozenset(self._path_of(v, "__key__ IN")
                                for v in _array(value, KEY_PROPERTY))
            if op == _IN:
                if top_level and targets:
                    self.narrow(min(targets), max(targets) + _JUST_AFTER)
                return lambda entity, path: path in targets
            return lambda entity, path: path not in targets
        compare = _COMPARE.get(op)
        if compare is None:
            raise invalid(f"filter operator {op} is not supported on __key__")
        target = self._path_of(value, f"__key__ filter {op}")
        if top_level:
            if op == _Op.Value("EQUAL"):
                self.narrow(target, target + _JUST_AFTER)
            elif op in (_Op.Value("GREATER_THAN"), _Op.Value("GREATER_THAN_OR_EQUAL")):
                self.narrow(target, None)
            elif op == _Op.Value("LESS_THAN"):
                self.narrow(None, target)
            elif op == _Op.Value("LESS_THAN_OR_EQUAL"):
                self.narrow(None, target + _JUST_AFTER)
        return lambda entity, path: compare(path, target)


def _array(value, name: str):
    if value.WhichOneof("value_type") != "array_value":
        raise invalid(f"IN / NOT_IN on {name!r} needs an array value, got "
                      f"{value.WhichOneof('value_type') or 'nothing'}")
    return value.array_value.values
