"""SQLite storage of the Datastore emulator: entities, versions and the id counter.

One table holds every entity as its serialized protobuf, keyed by partition and the
order-preserving path encoding of :mod:`emulators.datastore.keys`, with the kind in
its own column: kind and ancestor (path range) selection happen in SQL, everything
else in Python. One connection serves all threads behind one re-entrant lock;
:attr:`Store.lock` is also what makes a commit's check-then-write atomic.

``path=None`` keeps the data in memory; a file path keeps it across restarts.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from typing import Iterator, NamedTuple

from emulators.datastore.keys import Partition

__all__ = ["Store", "Row", "Write", "KindUsage"]

_LOGGER = logging.getLogger(__name__)

# Rows fetched per SQL round trip while scanning: large enough to be fast, small
# enough that a query with a limit stops early and the lock is released often.
SCAN_CHUNK_ROWS = 1000
# ReserveIds (and explicit ids in writes) push the id counter past ids below this,
# so allocated ids never land on a key a client chose. Larger ids (Beam picks random
# 63-bit ones) are far beyond what sequential allocation reaches: they leave the
# counter alone instead of throwing it to the end of the id space.
COUNTER_GUARD_BELOW = 1 << 40
# How many keys go into one `path IN (...)` lookup; SQLite allows 32766 parameters.
LOOKUP_CHUNK_KEYS = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    project   TEXT    NOT NULL,
    database  TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    path      BLOB    NOT NULL,
    entity    BLOB    NOT NULL,
    version   INTEGER NOT NULL,
    create_us INTEGER NOT NULL,
    update_us INTEGER NOT NULL,
    PRIMARY KEY (project, database, namespace, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entities_by_kind
    ON entities (project, database, namespace, kind, path);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Row(NamedTuple):
    """A stored entity: encoded path, serialized ``Entity``, version and times (µs)."""

    path: bytes
    entity: bytes
    version: int
    create_us: int
    update_us: int


class Write(NamedTuple):
    """One change of a commit: ``entity`` bytes to store, or ``None`` to delete."""

    partition: Partition
    kind: str
    path: bytes
    entity: bytes | None
    create_us: int


class KindUsage(NamedTuple):
    namespace: str
    kind: str
    count: int
    entity_bytes: int


def _claim(path: str):
    """Hold an exclusive lock next to the database for as long as the store is open.

    Versions and the id counter are cached in memory, so two emulators sharing one
    file would hand out the same ids: the second one is refused instead.
    """
    handle = open(path + ".lock", "a+")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise RuntimeError(
            f"{os.path.dirname(path) or '.'} is in use by another Datastore emulator: "
            f"stop it, or give this one another data dir") from exc
    return handle


class Store:
    """Entities in SQLite; every method is safe to call from any thread."""

    def __init__(self, path: str | None = None):
        self.path = path
        self.lock = threading.RLock()
        self._lock_file = _claim(path) if path else None
        self._db = sqlite3.connect(path or ":memory:", check_same_thread=False,
                                   isolation_level=None)
        if path:
            # WAL + NORMAL: a crash of the emulator loses nothing committed; only a
            # power cut can lose the last commits, which is fine for a local stand-in.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._version = self._meta("version", 0)
        self._next_id = self._meta("next_id", 1)
        self._commit_us = self._meta("commit_us", 0)

    def _meta(self, name: str, default: int) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return default if row is None else int(row[0])

    def _set_meta(self, name: str, value: int) -> None:
        self._db.execute("INSERT INTO meta(name, value) VALUES(?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                         (name, value))

    def close(self) -> None:
        with self.lock:
            self._db.close()
            if self._lock_file is not None:
                self._lock_file.close()  # releases the claim on the file
                self._lock_file = None

    # -- reads ------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The version of the last commit: what a read now observes."""
        return self._version

    @property
    def last_commit_us(self) -> int:
        return self._commit_us

    def get_many(self, partition: Partition, paths: list[bytes]) -> dict[bytes, Row]:
        """The stored rows among ``paths`` (all in ``partition``)."""
        found: dict[bytes, Row] = {}
        with self.lock:
            for start in range(0, len(paths), LOOKUP_CHUNK_KEYS):
                chunk = paths[start:start + LOOKUP_CHUNK_KEYS]
                marks = ",".join("?" * len(chunk))
                cursor = self._db.execute(
                    "SELECT path, entity, version, create_us, update_us FROM entities "
                    f"WHERE project=? AND database=? AND namespace=? AND path IN ({marks})",
                    (*partition, *chunk))
                for row in cursor:
                    found[row[0]] = Row(*row)
        return found

    def scan(self, partition: Partition, kind: str | None = None,
             low: bytes | None = None, high: bytes | None = None) -> Iterator[Row]:
        """Rows of ``kind`` (any kind if None) with ``low <= path < high``, in key order.

        Rows are read in chunks, so a caller that stops early reads little.
        """
        where = ["project=?", "database=?", "namespace=?"]
        args: list = list(partition)
        if kind is not None:
            where.append("kind=?")
            args.append(kind)
        if high is not None:
            where.append("path<?")
            args.append(high)
        sql_head = ("SELECT path, entity, version, create_us, update_us FROM entities "
                    "WHERE " + " AND ".join(where))
        after = None
        while True:
            bound, bound_args = "", []
            if after is not None:
                bound, bound_args = " AND path>?", [after]
            elif low is not None:
                bound, bound_args = " AND path>=?", [low]
            with self.lock:
                rows = self._db.execute(
                    f"{sql_head}{bound} ORDER BY path LIMIT {SCAN_CHUNK_ROWS}",
                    (*args, *bound_args)).fetchall()
            for row in rows:
                yield Row(*row)
            if len(rows) < SCAN_CHUNK_ROWS:
                return
            after = rows[-1][0]

    def count(self, partition: Partition, kind: str | None = None,
              low: bytes | None = None, high: bytes | None = None) -> int:
        """How many rows :meth:`scan` would yield, counted in SQL (an index walk:
        no entity is read or parsed)."""
        where = ["project=?", "database=?", "namespace=?"]
        args: list = list(partition)
        for clause, value in (("kind=?", kind), ("path>=?", low), ("path<?", high)):
            if value is not None:
                where.append(clause)
                args.append(value)
        with self.lock:
            return self._db.execute("SELECT COUNT(*) FROM entities WHERE "
                                    + " AND ".join(where), args).fetchone()[0]

    def usage(self, project: str, database: str) -> list[KindUsage]:
        """Entity count and bytes per namespace and kind (for the statistics kinds)."""
        with self.lock:
            rows = self._db.execute(
                "SELECT namespace, kind, COUNT(*), SUM(LENGTH(entity)) FROM entities "
                "WHERE project=? AND database=? GROUP BY namespace, kind "
                "ORDER BY namespace, kind", (project, database)).fetchall()
        return [KindUsage(*row) for row in rows]

    # -- writes -----------------------------------------------------------------------
    def next_commit(self) -> tuple[int, int]:
        """Version and time (µs, strictly increasing) for the next commit.

        Call with :attr:`lock` held, then :meth:`apply` under the same hold.
        """
        return self._version + 1, max(int(time.time() * 1e6), self._commit_us + 1)

    def apply(self, writes: list[Write], version: int, commit_us: int) -> None:
        """Store all ``writes`` atomically as commit ``version``."""
        with self.lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                deletes = [(*w.partition, w.path) for w in writes if w.entity is None]
                puts = [(*w.partition, w.kind, w.path, w.entity, version, w.create_us,
                         commit_us) for w in writes if w.entity is not None]
                if deletes:
                    db.executemany("DELETE FROM entities WHERE project=? AND database=? "
                                   "AND namespace=? AND path=?", deletes)
                if puts:
                    db.executemany(
                        "INSERT OR REPLACE INTO entities (project, database, namespace, "
                        "kind, path, entity, version, create_us, update_us) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", puts)
                self._set_meta("version", version)
                self._set_meta("commit_us", commit_us)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._version = version
            self._commit_us = commit_us

    # -- ids --------------------------------------------------------------------------
    def allocate_ids(self, count: int) -> range:
        """``count`` ids never handed out before (sequential, like Google's emulator)."""
        with self.lock:
            first = self._next_id
            self._next_id += count
            self._set_meta("next_id", self._next_id)
        return range(first, first + count)

    def reserve_ids(self, highest: int) -> None:
        """Make sure :meth:`allocate_ids` never returns ``highest`` or anything below."""
        with self.lock:
            if self._next_id <= highest < COUNTER_GUARD_BELOW:
                self._next_id = highest + 1
                self._set_meta("next_id", self._next_id)
