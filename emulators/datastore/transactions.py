"""Transactions with optimistic concurrency, as Datastore's clients expect them.

A read-write transaction remembers, for every entity it reads, the store version it
observed; its commit also covers the keys it writes (observed at the transaction's
start). The manager remembers the version of the last write to every key for as
long as an open transaction might need it. At commit, a key written after the
transaction observed it means a conflict: the commit fails with ``ABORTED`` and the
client retries with a new transaction, as against Google's Datastore.

Read-only transactions are accepted; they read the latest committed data and may
only commit without mutations.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import grpc

from emulators.datastore.errors import DatastoreError, invalid

__all__ = ["Transaction", "TransactionManager", "TRANSACTION_IDLE_TIMEOUT_S"]

_LOGGER = logging.getLogger(__name__)

# Datastore drops a transaction left idle this long; a client that crashed mid-way
# must not pin the write history (below) forever.
TRANSACTION_IDLE_TIMEOUT_S = 270.0
# Write history kept while transactions are open is pruned when it grows past this.
_PRUNE_AT = 50_000
_ID_BYTES = 16  # transaction ids are random, opaque bytes


@dataclass
class Transaction:
    id: bytes
    read_only: bool
    start_version: int
    last_used: float
    observed: dict = field(default_factory=dict)  # identity -> version seen


class TransactionManager:
    """Open transactions and the write history their commits are checked against."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[bytes, Transaction] = {}
        self._last_write: dict = {}  # identity -> version of its last write

    def begin(self, read_only: bool, version: int) -> Transaction:
        txn = Transaction(os.urandom(_ID_BYTES), read_only, version, time.monotonic())
        with self._lock:
            self._expire()
            self._open[txn.id] = txn
        _LOGGER.debug("begin transaction read_only=%s version=%d", read_only, version)
        return txn

    def get(self, txn_id: bytes) -> Transaction:
        """The open transaction ``txn_id``; INVALID_ARGUMENT if unknown or expired."""
        with self._lock:
            self._expire()
            txn = self._open.get(txn_id)
            if txn is None:
                raise invalid(f"transaction {txn_id.hex() or '<empty>'} has expired or "
                              f"is no longer valid (committed, rolled back or aborted): "
                              f"begin a new transaction")
            txn.last_used = time.monotonic()
            return txn

    def observe(self, txn: Transaction | None, identities, version: int) -> None:
        """Record that ``txn`` read ``identities`` as of store ``version``."""
        if txn is None or txn.read_only:
            return
        with self._lock:
            for ident in identities:
                txn.observed.setdefault(ident, version)

    def end(self, txn_id: bytes) -> Transaction | None:
        with self._lock:
            txn = self._open.pop(txn_id, None)
            self._prune()
            return txn

    def check(self, txn: Transaction, written) -> None:
        """Raise ABORTED if anything ``txn`` read or writes changed since it looked.

        Call with the store's lock held, together with the commit it guards.
        """
        with self._lock:
            stale = [ident for ident, seen in txn.observed.items()
                     if self._last_write.get(ident, 0) > seen]
            stale += [ident for ident in written if ident not in txn.observed
                      and self._last_write.get(ident, 0) > txn.start_version]
        if stale:
            raise DatastoreError(
                grpc.StatusCode.ABORTED,
                f"too much contention on these datastore entities: {len(stale)} entities "
                f"were changed by another commit after this transaction read them. "
                f"Retry the transaction")

    def record_writes(self, identities, version: int) -> None:
        """Remember ``version`` as the last write of each identity (if anyone cares)."""
        with self._lock:
            if not self._open:
                self._last_write.clear()
                return
            for ident in identities:
                self._last_write[ident] = version
            if len(self._last_write) > _PRUNE_AT:
                self._prune()

    # -- housekeeping (lock held) -------------------------------------------------------
    def _expire(self) -> None:
        deadline = time.monotonic() - TRANSACTION_IDLE_TIMEOUT_S
        for txn_id in [t.id for t in self._open.values() if t.last_used < deadline]:
            _LOGGER.info("transaction expired id=%s", txn_id.hex())
            del self._open[txn_id]

    def _prune(self) -> None:
        if not self._open:
            self._last_write.clear()
            return
        oldest = min(t.start_version for t in self._open.values())
        self._last_write = {k: v for k, v in self._last_write.items() if v > oldest}
