"""The database core every part of the index shares: engine, write transactions, group commit.

`MediaIndex` is put together from parts with one job each (`messages`,
`media_queue`, `optouts`); each part is a subclass of `IndexCore`, so all of
them use the same engine, the same SQLite writer lock and the same group
commit, and a statement of one part can share a transaction with another's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from receiver.index import db
from receiver.index.errors import translate_db_errors
from receiver.index.groupcommit import GroupCommit
from receiver.index.writelock import WriterLock

Self = TypeVar("Self", bound="IndexCore")


class IndexCore:
    """One database: its engine, short write transactions and shared commits."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._write_lock: WriterLock | None = None
        if self.dialect == "sqlite":
            database = engine.url.database
            on_disk = database not in (None, "", ":memory:") and not str(database).startswith(
                "file:"
            )
            self._write_lock = WriterLock(database if on_disk else None)
        self._writes = GroupCommit(self.begin)
        # Set after a commit that wrote event deliveries: wakes this process's
        # dispatcher at once instead of at its next poll (receiver/events).
        self.events_due = threading.Event()
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

    def notify_events(self, deliveries: int) -> None:
        """Call after the commit of a write that created `deliveries` delivery rows."""
        if deliveries:
            self.events_due.set()

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
