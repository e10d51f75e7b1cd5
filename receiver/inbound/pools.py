"""Thread pools made lazily, and made again in a forked child (threads never survive a fork)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["BACKGROUND_NICENESS", "ForkSafePool", "lower_thread_priority"]

# The nice value of background threads (thumbnails, playable copies, OCR).
BACKGROUND_NICENESS = 19


class ForkSafePool:
    """The `ThreadPoolExecutor` of the current process, made on first use.

    A pool made before a fork has no threads in the child, so `executor`
    makes a new one whenever the process id has changed. `on_new` runs (under
    the pool's lock) each time one is made, to reset state that belonged to
    the old pool's queue.
    """

    def __init__(
        self,
        threads: int,
        *,
        name: str,
        initializer: Callable[[], object] | None = None,
        on_new: Callable[[], None] | None = None,
    ) -> None:
        self._threads = threads
        self._name = name
        self._initializer = initializer
        self._on_new = on_new
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    @property
    def executor(self) -> ThreadPoolExecutor:
        """This process's pool, made now if there is none yet."""
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(
                    self._threads, thread_name_prefix=self._name, initializer=self._initializer
                )
                self._pid = os.getpid()
                if self._on_new is not None:
                    self._on_new()
            return self._pool

    def shutdown(self, wait: bool = True) -> None:
        """Stop this process's pool; without `wait`, queued work is cancelled.

        A pool inherited through a fork is only forgotten: its threads are the
        parent's. The next use makes a new pool.
        """
        with self._lock:
            pool = self._pool if self._pid == os.getpid() else None
            self._pool = None
        # Outside the lock: work still running may reach for `executor`.
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=not wait)


def lower_thread_priority() -> None:
    """Give the calling thread the lowest CPU priority (a pool `initializer`).

    On Linux a thread has its own nice value: background work (C code that
    releases the GIL) then takes the CPU only when answering webhooks leaves
    it idle. Not Linux, or not allowed: the thread runs at normal priority.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
