"""Aggregation queries: COUNT (with ``up_to``), SUM and AVG over a nested query.

The nested query runs in full (its limit, offset and cursors apply). SUM adds the
integer and double values of the property and ignores other types; it stays an
integer while every value is one and the total fits in 64 bits. AVG is a double,
or null when no value was numeric. Aliases left empty get ``field_1``, ``field_2``
... as Datastore names them.
"""
from __future__ import annotations

import logging

from emulators.datastore.errors import invalid
from emulators.datastore.protos import AggregationResultBatch, MoreResults, Value
from emulators.datastore.query import QueryPlan, execute
from emulators.datastore.store import Store
from emulators.datastore.timestamps import set_timestamp

__all__ = ["run_aggregation", "MAX_AGGREGATIONS"]

_LOGGER = logging.getLogger(__name__)

MAX_AGGREGATIONS = 5  # Datastore's limit per aggregation query
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _numbers(entities, name: str):
    """The numeric values of property ``name``; other types (and arrays) are skipped."""
    for entity in entities:
        if name not in entity.properties:
            continue
        value = entity.properties[name]
        which = value.WhichOneof("value_type")
        if which == "integer_value":
            yield value.integer_value
        elif which == "double_value":
            yield value.double_value


def _sum(entities, name: str) -> Value:
    numbers = list(_numbers(entities, name))
    total = sum(numbers)
    if all(isinstance(n, int) for n in numbers) and _INT64_MIN <= total <= _INT64_MAX:
        return Value(integer_value=int(total))
    return Value(double_value=float(sum(float(n) for n in numbers)))


def _avg(entities, name: str) -> Value:
    numbers = list(_numbers(entities, name))
    if not numbers:
        return Value(null_value=0)
    return Value(double_value=sum(float(n) for n in numbers) / len(numbers))


def _countable(plan: QueryPlan) -> bool:
    """Whether the rows :func:`execute` would yield for ``plan`` are exactly the rows
    in its kind and key range, one result each (so their number is a SQL COUNT)."""
    return (plan.predicate is None and plan.key_ordered and plan.start is None
            and plan.end is None)


def run_aggregation(batch: AggregationResultBatch, store: Store, plan: QueryPlan,
                    aggregations, read_us: int) -> None:
    """Fill ``batch`` with the single result Datastore answers."""
    if not aggregations:
        raise invalid("an aggregation query needs at least one aggregation "
                      "(count, sum or avg)")
    if len(aggregations) > MAX_AGGREGATIONS:
        raise invalid(f"an aggregation query may hold at most {MAX_AGGREGATIONS} "
                      f"aggregations, got {len(aggregations)}")
    aliases = []
    for index, aggregation in enumerate(aggregations):
        alias = aggregation.alias or f"field_{index + 1}"
        if alias in aliases:
            raise invalid(f"aggregation alias {alias!r} is used twice: give each "
                          f"aggregation its own alias")
        aliases.append(alias)
    if all(a.WhichOneof("operator") == "count" for a in aggregations) and _countable(plan):
        # COUNT over a kind (or key range) with nothing to test per entity: SQL counts
        # the index; parsing every entity made a count cost a full scan, and held up
        # everything else the emulator serves meanwhile.
        total = store.count(plan.partition, plan.kind, plan.low, plan.high)
        count = max(0, total - plan.offset)
        entities = range(count if plan.limit is None else min(count, plan.limit))
    else:
        outcome = execute(store, plan, whole=True)
        entities = [result.entity for result in outcome.results]
    result = batch.aggregation_results.add()
    for alias, aggregation in zip(aliases, aggregations):
        operator = aggregation.WhichOneof("operator")
        if operator == "count":
            count = len(entities)
            if aggregation.count.HasField("up_to"):
                up_to = aggregation.count.up_to.value
                if up_to < 0:
                    raise invalid(f"count up_to must be >= 0, got {up_to}")
                count = min(count, up_to)
            result.aggregate_properties[alias].integer_value = count
        elif operator in ("sum", "avg"):
            name = getattr(aggregation, operator).property.name
            if not name:
                raise invalid(f"{operator} aggregation {alias!r} names no property")
            compute = _sum if operator == "sum" else _avg
            result.aggregate_properties[alias].CopyFrom(compute(entities, name))
        else:
            raise invalid(f"aggregation {alias!r} has no operator: use count, sum "
                          f"or avg")
    batch.more_results = MoreResults.Value("NO_MORE_RESULTS")
    set_timestamp(batch.read_time, read_us)
