"""Structured queries: kind, filters, orders, projection, distinct, cursors, paging.

SQL selects candidates by partition, kind and key range (ancestor and ``__key__``
filters); Python applies the filters, sorts by position (see
:mod:`emulators.datastore.cursors`), drops duplicates for ``distinct_on``, and cuts
the batch at the cursors, the offset, the limit and a size cap. Queries in key order
without projection stream from SQL and stop as soon as the batch is full, so paging
through a large kind costs one page per request.

``more_results`` follows Datastore: ``NOT_FINISHED`` when the batch was capped (ask
again from ``end_cursor``), ``MORE_RESULTS_AFTER_LIMIT`` / ``_AFTER_CURSOR`` when the
limit / end cursor stopped it with results left, else ``NO_MORE_RESULTS``.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

from emulators.datastore import cursors
from emulators.datastore.errors import invalid, unimplemented
from emulators.datastore.filters import compile_filter
from emulators.datastore.keys import Partition
from emulators.datastore.protos import (Entity, EntityResult, MoreResults,
                                        PropertyOrder, QueryResultBatch)
from emulators.datastore.stats import VIRTUAL_KINDS, virtual_rows
from emulators.datastore.store import Row, Store
from emulators.datastore.timestamps import set_timestamp
from emulators.datastore.values import index_values, sort_key

__all__ = ["plan_query", "execute", "fill_batch", "QueryPlan", "Outcome",
           "MAX_BATCH_RESULTS", "MAX_BATCH_BYTES"]

_LOGGER = logging.getLogger(__name__)

# Results per RunQuery response before NOT_FINISHED (the client asks again by itself)
# for queries streamed in key order: a page costs only its own rows.
MAX_BATCH_RESULTS = 1000
# The same for sorted queries: they have read and sorted every match already, so
# they hand out more at once instead of sorting everything again for each page.
MAX_SORTED_BATCH_RESULTS = 50_000
# Bytes of entities per response before NOT_FINISHED (entities may be 1 MiB each;
# the gRPC server sends at most 64 MiB).
MAX_BATCH_BYTES = 8 * 1024 * 1024

_DESCENDING = PropertyOrder.Direction.Value("DESCENDING")
_FULL = EntityResult.ResultType.Value("FULL")
_PROJECTION = EntityResult.ResultType.Value("PROJECTION")
_KEY_ONLY = EntityResult.ResultType.Value("KEY_ONLY")


@dataclass
class QueryPlan:
    partition: Partition
    kind: str | None
    predicate: object
    low: bytes | None
    high: bytes | None
    orders: list  # [(name, descending)]
    tiebreak_desc: bool
    projection: list  # projected property names other than __key__
    keys_only: bool
    distinct_on: list
    start: tuple | None
    end: tuple | None
    offset: int
    limit: int | None
    start_cursor: bytes = b""

    @property
    def key_ordered(self) -> bool:
        """Rows come out of SQL already in the final order."""
        return (not self.projection and not self.distinct_on
                and self.kind not in VIRTUAL_KINDS
                and self.orders in ([], [(cursors.KEY_PROPERTY, False)]))


class _Result:
    __slots__ = ("row", "entity", "projected", "pos")

    def __init__(self, row: Row, entity, projected, pos):
        self.row, self.entity, self.projected, self.pos = row, entity, projected, pos


@dataclass
class Outcome:
    plan: QueryPlan
    results: list = field(default_factory=list)
    skipped: int = 0
    more: int = MoreResults.Value("NO_MORE_RESULTS")
    last_skipped: _Result | None = None

    def cursor_after(self, result: _Result) -> bytes:
        plan = self.plan
        return cursors.encode_cursor(plan.orders, plan.projection, result.entity,
                                     result.row.path, result.projected)


def plan_query(query, partition: Partition, project: str, database: str) -> QueryPlan:
    """Check a ``Query`` and turn it into a plan; INVALID_ARGUMENT when it is wrong."""
    if len(query.kind) > 1:
        raise invalid(f"a query may name at most one kind, got "
                      f"{[k.name for k in query.kind]}: run one query per kind")
    if query.HasField("find_nearest"):
        raise unimplemented("find_nearest (vector search) is not supported by the "
                            "local Datastore emulator")
    kind = query.kind[0].name if query.kind else None
    if kind is not None and not kind:
        raise invalid("the query's kind is empty: give a kind name, or none for a "
                      "kindless query")
    if kind is not None and kind.startswith("__") and kind not in VIRTUAL_KINDS:
        raise invalid(f"kind {kind!r} is reserved and unknown to this emulator: it "
                      f"serves {sorted(VIRTUAL_KINDS)}")
    predicate, low, high = compile_filter(query.filter, partition, project, database)
    orders = []
    for order in query.order:
        if not order.property.name:
            raise invalid("a sort order has no property name: set property.name")
        orders.append((order.property.name, order.direction == _DESCENDING))
    names = [p.property.name for p in query.projection]
    if any(not n for n in names):
        raise invalid("a projection has an empty property name")
    projection = [n for n in dict.fromkeys(names) if n != cursors.KEY_PROPERTY]
    if query.offset < 0:
        raise invalid(f"offset must be >= 0, got {query.offset}")
    limit = query.limit.value if query.HasField("limit") else None
    if limit is not None and limit < 0:
        raise invalid(f"limit must be >= 0, got {limit}")
    plan = QueryPlan(
        partition=partition, kind=kind, predicate=predicate, low=low, high=high,
        orders=orders, tiebreak_desc=bool(orders) and orders[-1][1],
        projection=projection, keys_only=bool(names) and not projection,
        distinct_on=[d.name for d in query.distinct_on], start=None, end=None,
        offset=query.offset, limit=limit, start_cursor=query.start_cursor)
    if query.start_cursor:
        plan.start = cursors.decode_cursor(query.start_cursor, orders, plan.tiebreak_desc,
                                           projection, "start_cursor")
    if query.end_cursor:
        plan.end = cursors.decode_cursor(query.end_cursor, orders, plan.tiebreak_desc,
                                         projection, "end_cursor")
    return plan


def _projections(entity, names):
    """One ``{name: Value}`` per combination of distinct indexed values, or []."""
    choices = []
    for name in names:
        distinct = {}
        for value in index_values(entity, name):
            distinct.setdefault(sort_key(value), value)
        if not distinct:
            return []
        choices.append(list(distinct.values()))
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def _candidates(store: Store, plan: QueryPlan):
    if plan.kind in VIRTUAL_KINDS:
        return iter(virtual_rows(store, plan.partition, plan.kind))
    low = plan.low
    if plan.key_ordered and plan.start is not None:
        low = max(low or b"", plan.start[0])  # resume at the cursor, not the start
    return store.scan(plan.partition, plan.kind, low, plan.high)


def _matches(store: Store, plan: QueryPlan):
    """Matching rows with their positions, in SQL's key order."""
    for row in _candidates(store, plan):
        entity = Entity.FromString(row.entity)
        if plan.predicate is not None and not plan.predicate(entity, row.path):
            continue
        if plan.projection:
            options = _projections(entity, plan.projection)
        else:
            options = [None]
        for projected in options:
            pos = cursors.position(plan.orders, plan.tiebreak_desc, plan.projection,
                                   entity, row.path, projected)
            if pos is not None:
                yield _Result(row, entity, projected, pos)


def _distinct_key(result: _Result, names) -> tuple:
    parts = []
    for name in names:
        if name == cursors.KEY_PROPERTY:
            parts.append(result.row.path)
        elif result.projected is not None and name in result.projected:
            parts.append(sort_key(result.projected[name]))
        else:
            keys = [sort_key(v) for v in index_values(result.entity, name)]
            parts.append(min(keys) if keys else None)
    return tuple(parts)


def _ordered(store: Store, plan: QueryPlan):
    if plan.key_ordered:
        yield from _matches(store, plan)
        return
    results = sorted(_matches(store, plan), key=lambda r: r.pos)
    seen = set()
    for result in results:
        if plan.distinct_on:
            marker = _distinct_key(result, plan.distinct_on)
            if marker in seen:
                continue
            seen.add(marker)
        yield result


def execute(store: Store, plan: QueryPlan, *, whole: bool = False) -> Outcome:
    """Run ``plan`` for one batch (``whole``: no batch cap, for aggregations)."""
    outcome = Outcome(plan)
    max_results = max_bytes = None
    if not whole:
        max_bytes = MAX_BATCH_BYTES
        max_results = MAX_BATCH_RESULTS if plan.key_ordered else MAX_SORTED_BATCH_RESULTS
    size = 0
    for result in _ordered(store, plan):
        if plan.start is not None and not result.pos > plan.start:
            continue
        if plan.end is not None and result.pos > plan.end:
            outcome.more = MoreResults.Value("MORE_RESULTS_AFTER_CURSOR")
            break
        if outcome.skipped < plan.offset:
            outcome.skipped += 1
            outcome.last_skipped = result
            continue
        if plan.limit is not None and len(outcome.results) >= plan.limit:
            outcome.more = MoreResults.Value("MORE_RESULTS_AFTER_LIMIT")
            break
        if outcome.results and (
                (max_results is not None and len(outcome.results) >= max_results)
                or (max_bytes is not None and size >= max_bytes)):
            outcome.more = MoreResults.Value("NOT_FINISHED")
            break
        outcome.results.append(result)
        size += len(result.row.entity)
    return outcome


def _result_entity(plan: QueryPlan, result: _Result):
    if plan.keys_only:
        entity = Entity()
        entity.key.CopyFrom(result.entity.key)
        return entity, _KEY_ONLY
    if plan.projection:
        entity = Entity()
        entity.key.CopyFrom(result.entity.key)
        for name, value in result.projected.items():
            entity.properties[name].CopyFrom(value)
        return entity, _PROJECTION
    return result.entity, _FULL


def fill_batch(batch: QueryResultBatch, outcome: Outcome, read_us: int) -> None:
    """Write an outcome into ``batch``, with a cursor on every result."""
    plan = outcome.plan
    batch.skipped_results = outcome.skipped
    if outcome.last_skipped is not None:
        batch.skipped_cursor = outcome.cursor_after(outcome.last_skipped)
    batch.entity_result_type = (_KEY_ONLY if plan.keys_only
                                else _PROJECTION if plan.projection else _FULL)
    for result in outcome.results:
        entity, _ = _result_entity(plan, result)
        item = batch.entity_results.add()
        item.entity.CopyFrom(entity)
        item.version = result.row.version
        set_timestamp(item.create_time, result.row.create_us)
        set_timestamp(item.update_time, result.row.update_us)
        item.cursor = outcome.cursor_after(result)
    if outcome.results:
        batch.end_cursor = batch.entity_results[-1].cursor
    elif outcome.last_skipped is not None:
        batch.end_cursor = batch.skipped_cursor
    else:
        batch.end_cursor = plan.start_cursor
    batch.more_results = outcome.more
    set_timestamp(batch.read_time, read_us)
