"""The database core every part of the index shares: engine, write transactions, group commit.

`MediaIndex` is put together from parts with one job each (`messages`,
`media_queue`, `optouts`); each part is a subclass of `IndexCore`, so all of
them use the same engine, the same SQLite writer lock and the same group
commit, and a statement of one part can share a transaction with another's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Table, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from receiver.index import db
from receiver.index.errors import translate_db_errors
from receiver.index.groupcommit import GroupCommit
from receiver.index.schema import endpoints
from receiver.index.writelock import WriterLock

Self = TypeVar("Self", bound="IndexCore")

#: How long this process trusts its last look at whether any endpoint is enabled
#: (seconds). Only the dispatcher's wake-up depends on it: its poll finds the rest.
ENDPOINTS_HINT_TTL = 2.0


class IndexCore:
    """One database: its engine, short write transactions and shared commits."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._write_lock: WriterLock | None = None
        # PostgreSQL runs write transactions side by side; SQLite one at a time.
        self._concurrent_writers = self.dialect != "sqlite"
        if self.dialect == "sqlite":
            database = engine.url.database
            on_disk = database not in (None, "", ":memory:") and not str(database).startswith(
                "file:"
            )
            self._write_lock = WriterLock(database if on_disk else None)
        self._writes = GroupCommit(self.begin)
        # Set after a commit that wrote events an endpoint may want: wakes this
        # process's dispatcher at once instead of at its next poll (receiver/events).
        self.events_due = threading.Event()
        self._endpoints_hint = (0.0, False)
        self._prepare()

    def _prepare(self) -> None:
        """Build statements used on hot paths once (parts extend this)."""

    @classmethod
    def open(cls: type[Self], url: str, *, upgrade: bool = True) -> Self:
        """Connect to `url` and bring the schema up to date."""
        engine = db.make_engine(url)
        if upgrade:
            db.upgrade(engine)
        return cls(engine)

    def close(self) -> None:
        """Release every pooled connection (call after fork and at shutdown)."""
        self.engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A short write transaction.

        SQLite has one writer at a time and its busy handler backs off with
        sleeps of up to 100 ms; writers of every thread and process queue on
        a `WriterLock` instead, which hands over without sleeping.
        """
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock.hold(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def begin_unflushed(self) -> Iterator[Connection]:
        """A write transaction whose commit is not flushed to disk before it returns.

        For bookkeeping that a power cut may roll back without harm (event
        delivery claims and outcomes: a lost one means an event sent again,
        which at-least-once delivery allows). It spares the writer a flush:
        SQLite commits it with `synchronous=NORMAL` (in WAL mode, no fsync; the
        next durable commit flushes it too), PostgreSQL with
        `synchronous_commit = off`.
        """
        if self._write_lock is None:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SET LOCAL synchronous_commit = off"))
                yield conn
            return
        with self._write_lock.hold(), self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA synchronous=NORMAL")
            try:
                with conn.begin():
                    yield conn
            finally:
                raw.execute("PRAGMA synchronous=FULL")

    def notify_events(self, written: int) -> None:
        """Call after the commit of a write that wrote `written` events (or deliveries)."""
        if written and self.may_have_endpoints():
            self.events_due.set()

    def may_have_endpoints(self) -> bool:
        """Whether an enabled endpoint existed at most `ENDPOINTS_HINT_TTL` seconds ago.

        With none, a commit's events wake nobody: the dispatcher would only read
        an empty queue. A read, made outside any write transaction.
        """
        checked_at, seen = self._endpoints_hint
        now = time.monotonic()
        if now - checked_at < ENDPOINTS_HINT_TTL:
            return seen
        try:
            with self.engine.connect() as conn:
                seen = (
                    conn.execute(
                        select(endpoints.c.id).where(endpoints.c.enabled.is_(True)).limit(1)
                    ).first()
                    is not None
                )
        except Exception:
            seen = True  # unknown: wake the dispatcher, which reports the fault
        self._endpoints_hint = (now, seen)
        return seen

    def forget_endpoints_hint(self) -> None:
        """Call after this process added or enabled an endpoint."""
        self._endpoints_hint = (0.0, False)

    @translate_db_errors
    def ping(self) -> None:
        """Raise IndexUnavailable unless the database answers."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _insert(self, table: Table) -> Any:
        """An INSERT of this dialect (both have ON CONFLICT)."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)
