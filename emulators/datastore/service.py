"""The ``google.datastore.v1.Datastore`` gRPC service, backed by SQLite.

Point the official client (``google-cloud-datastore``) or Beam's Datastore connectors
at it with ``DATASTORE_EMULATOR_HOST=host:port``; they need no other change.

    python -m emulators.datastore --port 8081 --data-dir .rotwatch/emulators
"""
from __future__ import annotations

import logging
import os
from typing import Callable

from emulators.datastore import aggregation, commit, query
from emulators.datastore.errors import DatastoreError, invalid, unimplemented
from emulators.datastore.keys import (Partition, check_key, describe, encode_path,
                                      normalize_key, partition_of)
from emulators.datastore.protos import METHOD_TYPES, SERVICE
from emulators.datastore.store import Store
from emulators.datastore.timestamps import now_us, set_timestamp
from emulators.datastore.transactions import Transaction, TransactionManager
from emulators.grpcserver import GrpcEmulator, unary

__all__ = ["DatastoreEmulator", "DB_FILENAME", "MAX_LOOKUP_RESULTS"]

_LOGGER = logging.getLogger(__name__)

DB_FILENAME = "datastore.sqlite3"
# Lookup answers at most this many keys and about this many bytes at once and
# defers the rest, as Datastore does; the client looks the deferred keys up again.
MAX_LOOKUP_RESULTS = 1000
MAX_LOOKUP_BYTES = 16 * 1024 * 1024
_GQL_HELP = ("GQL queries are not supported by the local Datastore emulator: build "
             "the query with the client instead (client.query(kind=...), add_filter, "
             "order, fetch)")


def _guarded(method: Callable) -> Callable:
    """Turn :class:`DatastoreError` into the gRPC status the client expects."""
    name = method.__name__

    def handler(self, request, context):
        try:
            return method(self, request, context)
        except DatastoreError as exc:
            _LOGGER.debug("%s refused code=%s message=%s", name, exc.code.name, exc.message)
            context.abort(exc.code, exc.message)

    handler.__name__ = name
    return handler


class DatastoreEmulator(GrpcEmulator):
    """Datastore served from SQLite: in memory (``data_dir=None``) or on disk."""

    name = "datastore-emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 data_dir: str | None = None, **kwargs):
        super().__init__(host=host, port=port, **kwargs)
        self.data_dir = data_dir
        self._store: Store | None = None
        self._txns = TransactionManager()

    # -- lifecycle ------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError(f"{self.name} is not started: call start() first")
        return self._store

    def start(self) -> "DatastoreEmulator":
        path = None
        if self.data_dir:
            os.makedirs(self.data_dir, exist_ok=True)
            path = os.path.join(self.data_dir, DB_FILENAME)
        self._store = Store(path)
        self._txns = TransactionManager()
        try:
            super().start()
        except BaseException:
            self.on_stop()
            raise
        _LOGGER.info("datastore emulator storage=%s", path or "memory")
        return self

    def on_stop(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def handlers(self):
        methods = {}
        for method, (request_type, response_type) in METHOD_TYPES.items():
            behaviour = getattr(self, f"_{method}")
            methods[method] = unary(behaviour, request_type, response_type)
        return {SERVICE: methods}

    # -- helpers --------------------------------------------------------------------
    def _read_transaction(self, read_options, response) -> Transaction | None:
        """The transaction a read runs in (begun now for ``new_transaction``)."""
        which = read_options.WhichOneof("consistency_type")
        if which == "transaction":
            return self._txns.get(read_options.transaction)
        if which == "new_transaction":
            txn = self._begin(read_options.new_transaction)
            response.transaction = txn.id
            return txn
        return None  # strong/eventual/read_time: the latest committed data

    def _begin(self, options) -> Transaction:
        with self.store.lock:  # no commit may slip between version and registration
            return self._txns.begin(options.WhichOneof("mode") == "read_only",
                                    self.store.version)

    @staticmethod
    def _partition(request) -> Partition:
        project = request.project_id
        partition = request.partition_id
        if partition.project_id and partition.project_id != project:
            raise invalid(f"partition_id.project_id {partition.project_id!r} differs "
                          f"from project_id {project!r}: query within one project")
        return Partition(project, request.database_id, partition.namespace_id)

    # -- methods --------------------------------------------------------------------
    @_guarded
    def _Lookup(self, request, context):
        response = METHOD_TYPES["Lookup"][1].pb()()
        keys = list(request.keys)
        for key in keys:
            check_key(key, allow_incomplete=False, allow_reserved=True, what="lookup key")
            normalize_key(key, request.project_id, request.database_id)
        txn = self._read_transaction(request.read_options, response)
        answered, deferred = keys[:MAX_LOOKUP_RESULTS], keys[MAX_LOOKUP_RESULTS:]
        by_partition: dict[Partition, list] = {}
        for key in answered:
            by_partition.setdefault(partition_of(key), []).append(key)
        size, read = 0, []
        store = self.store
        with store.lock:
            version = store.version
            rows = {part: store.get_many(part, [encode_path(k.path) for k in part_keys])
                    for part, part_keys in by_partition.items()}
        for key in answered:
            part, path = partition_of(key), encode_path(key.path)
            row = rows[part].get(path)
            if row is None:
                item = response.missing.add()
                item.entity.key.CopyFrom(key)
                item.version = version
            elif size and size + len(row.entity) > MAX_LOOKUP_BYTES:
                deferred.append(key)
                continue
            else:
                size += len(row.entity)
                item = response.found.add()
                item.entity.ParseFromString(row.entity)
                item.version = row.version
                set_timestamp(item.create_time, row.create_us)
                set_timestamp(item.update_time, row.update_us)
            read.append((part, path))
        response.deferred.extend(deferred)
        self._txns.observe(txn, read, version)
        set_timestamp(response.read_time, now_us())
        return response

    def _plan(self, request, query_pb):
        partition = self._partition(request)
        return query.plan_query(query_pb, partition, request.project_id,
                                request.database_id)

    @_guarded
    def _RunQuery(self, request, context):
        response = METHOD_TYPES["RunQuery"][1].pb()()
        if request.WhichOneof("query_type") != "query":
            raise unimplemented(_GQL_HELP)
        plan = self._plan(request, request.query)
        txn = self._read_transaction(request.read_options, response)
        version = self.store.version
        outcome = query.execute(self.store, plan)
        query.fill_batch(response.batch, outcome, now_us())
        response.batch.snapshot_version = version
        self._txns.observe(txn, [(plan.partition, r.row.path) for r in outcome.results],
                           version)
        return response

    @_guarded
    def _RunAggregationQuery(self, request, context):
        response = METHOD_TYPES["RunAggregationQuery"][1].pb()()
        if request.WhichOneof("query_type") != "aggregation_query":
            raise unimplemented(_GQL_HELP)
        agg = request.aggregation_query
        plan = self._plan(request, agg.nested_query)
        self._read_transaction(request.read_options, response)
        aggregation.run_aggregation(response.batch, self.store, plan, agg.aggregations,
                                    now_us())
        return response

    @_guarded
    def _BeginTransaction(self, request, context):
        response = METHOD_TYPES["BeginTransaction"][1].pb()()
        response.transaction = self._begin(request.transaction_options).id
        return response

    @_guarded
    def _Rollback(self, request, context):
        self._txns.get(request.transaction)  # INVALID_ARGUMENT if unknown
        self._txns.end(request.transaction)
        return METHOD_TYPES["Rollback"][1].pb()()

    @_guarded
    def _Commit(self, request, context):
        txn = None
        if request.WhichOneof("transaction_selector") == "transaction":
            txn = self._txns.get(request.transaction)
        elif (request.mode == request.Mode.Value("TRANSACTIONAL")
              and request.WhichOneof("transaction_selector") is None):
            raise invalid("mode TRANSACTIONAL needs a transaction: begin one first, or "
                          "use NON_TRANSACTIONAL")
        try:
            return self._commit(request, txn)
        finally:
            if txn is not None:  # a transaction commits once, whatever the outcome
                self._txns.end(txn.id)

    def _commit(self, request, txn: Transaction | None):
        if txn is not None and txn.read_only and request.mutations:
            raise invalid("a read-only transaction cannot write: begin a read-write "
                          "transaction for mutations")
        planned = commit.prepare(request.mutations, request.project_id,
                                 request.database_id)
        store = self.store
        with store.lock:
            if txn is not None:
                written = [(partition_of(p.key), p.path) for p in planned
                           if not p.allocate]
                self._txns.check(txn, written)
            version, commit_us = store.next_commit()
            results, identities = commit.apply(store, planned, version, commit_us)
            self._txns.record_writes(identities, version)
        response = METHOD_TYPES["Commit"][1].pb()()
        response.mutation_results.extend(results)
        response.index_updates = len(identities)
        set_timestamp(response.commit_time, commit_us)
        return response

    @_guarded
    def _AllocateIds(self, request, context):
        response = METHOD_TYPES["AllocateIds"][1].pb()()
        keys = list(request.keys)
        for key in keys:
            check_key(key, allow_incomplete=True, what="AllocateIds key")
            normalize_key(key, request.project_id, request.database_id)
            if key.path[-1].WhichOneof("id_type") is not None:
                raise invalid(f"AllocateIds takes incomplete keys, but {describe(key)} "
                              f"already has an id or name: leave the last id out")
        for key, new_id in zip(keys, self.store.allocate_ids(len(keys))):
            key.path[-1].id = new_id
        response.keys.extend(keys)
        return response

    @_guarded
    def _ReserveIds(self, request, context):
        highest = 0
        for key in request.keys:
            check_key(key, allow_incomplete=False, what="ReserveIds key")
            normalize_key(key, request.project_id, request.database_id)
            last = key.path[-1]
            if last.WhichOneof("id_type") == "id":
                highest = max(highest, last.id)
        self.store.reserve_ids(highest)
        return METHOD_TYPES["ReserveIds"][1].pb()()
