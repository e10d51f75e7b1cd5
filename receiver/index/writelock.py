"""One SQLite writer at a time across threads and processes, handed over without sleeping.

SQLite admits one writer; a second one gets SQLITE_BUSY and its busy handler
sleeps (1, 2, 5, ... up to 100 ms) before trying again, so with several
gunicorn workers a write often waits far longer than the write it waits for.
Queueing writers on a thread lock and then on an advisory `flock` of a file
beside the database wakes the next writer the moment the lock is released.
The busy handler stays as the fallback for processes that do not take the
lock (the `sqlite3` shell, an older release).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the thread lock and the busy handler remain
    fcntl = None  # type: ignore[assignment]


class WriterLock:
    """A lock for the writers of one SQLite file (`path` None: threads only)."""

    def __init__(self, database: str | None) -> None:
        self._threads = threading.Lock()
        self._path = None if database is None else Path(database + "-writer.lock")
        self._fd = -1
        self._pid = 0
        # A child forked while a thread of the parent held the lock would
        # inherit it held, by a thread the child does not have.
        ref = weakref.ref(self)

        def reset_in_child() -> None:
            lock = ref()
            if lock is not None:
                lock._threads = threading.Lock()

        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=reset_in_child)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the duration of one write transaction."""
        with self._threads:
            fd = self._file()
            if fd < 0:
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _file(self) -> int:
        # A forked child shares its parent's open file, and flock treats both
        # as one holder; so every process opens the file for itself.
        if self._path is None or fcntl is None:
            return -1
        if self._pid != os.getpid():
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                self._fd = -1  # a read-only directory: fall back to the busy handler
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        """Close this process's lock file."""
        with self._threads:
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
            self._fd, self._pid = -1, 0
