"""Group commit: small writes queued by concurrent threads share one transaction.

Under load most of a short write's time is spent waiting for the database's
writer lock (SQLite's single writer, or a PostgreSQL commit's flush). While
one thread of a process holds the lock, the writes its sibling threads queue
meanwhile are taken together by the next of them, in one transaction: fewer
lock hand-overs and commits, and no added delay when a write arrives alone.

A batch that fails is retried one write per transaction, so one write's error
is reported to its own caller only. A write that PostgreSQL chose as a deadlock
victim (or aborted for a serialization failure) is run again: two processes'
batches may lock shared rows (a thread's summary, a day's roll-up) in opposite
orders, and the aborted one succeeds once the other has committed.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from sqlalchemy.engine import Connection

T = TypeVar("T")

Work = Callable[[Connection], T]

#: Runs of one write when PostgreSQL aborts it as a deadlock victim or for a
#: serialization failure; the other transaction has committed by then.
CONFLICT_ATTEMPTS = 3
#: SQLSTATEs of those aborts (deadlock_detected, serialization_failure).
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


def is_transient_conflict(exc: BaseException) -> bool:
    """Whether `exc` is a transaction the database aborted only to let another finish."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in TRANSIENT_SQLSTATES


class _Job(Generic[T]):
    __slots__ = ("done", "error", "value", "work")

    def __init__(self, work: Work[T]) -> None:
        self.work = work
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(self, conn: Connection) -> None:
        self.value = self.work(conn)


class GroupCommit:
    """Runs `work(conn)` callables in shared transactions opened by `begin`."""

    def __init__(self, begin: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._begin = begin
        self._queue: list[_Job[object]] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()
        # A child forked while a thread held a lock would inherit it held by
        # a thread it does not have; its queue is the parent's business.
        ref = weakref.ref(self)

        def reset_in_child() -> None:
            group = ref()
            if group is not None:
                group._queue = []
                group._queue_lock, group._leader = threading.Lock(), threading.Lock()

        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=reset_in_child)

    def run(self, work: Work[T]) -> T:
        """Run `work` in a transaction, possibly with other threads' work; its result."""
        job: _Job[T] = _Job(work)
        with self._queue_lock:
            self._queue.append(job)  # type: ignore[arg-type]
        with self._leader:
            # A leader before us may have taken our job with its batch.
            if not job.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[return-value]

    def _commit(self, batch: list[_Job[object]]) -> None:
        try:
            if len(batch) > 1 and self._together(batch):
                return
            for job in batch:
                self._alone(job)
        except BaseException as exc:
            # Interrupted (the worker is shutting down): no job may be left
            # looking unfinished, or its thread would wait for nothing.
            for job in batch:
                if not job.done:
                    job.error, job.done = exc, True
            raise

    def _together(self, batch: list[_Job[object]]) -> bool:
        try:
            with self._begin() as conn:
                for job in batch:
                    job.run(conn)
        except Exception:
            return False  # rolled back; each job is retried alone
        for job in batch:
            job.done = True
        return True

    def _alone(self, job: _Job[object]) -> None:
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                with self._begin() as conn:
                    job.run(conn)
            except Exception as exc:
                if attempt < CONFLICT_ATTEMPTS and is_transient_conflict(exc):
                    continue  # rolled back; the transaction it waited for has finished
                job.error = exc
            break
        job.done = True
