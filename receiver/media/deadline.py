"""One time limit per download, enforced by a single watchdog thread.

A download runs inside `deadline_scope(seconds)`. Every connection the
watched urllib3 pools open or reuse on that thread is registered with the
scope's `Deadline`; when it passes, the watchdog shuts those sockets, which
wakes a read blocked on a server that trickles bytes. Timeouts per read
cannot do this: a byte every few seconds satisfies any read timeout.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Deadline", "WatchedHTTPPool", "WatchedHTTPSPool", "deadline_scope"]

_current = threading.local()


class Watched(Protocol):
    """What a deadline shuts: anything holding a socket in `sock` (None before connecting)."""

    sock: Any


class Deadline:
    """One download's time limit. When it passes, the sockets in use are shut down,
    which wakes a read blocked on a server that trickles bytes."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.at = self.start + seconds
        self._lock = threading.Lock()
        self._connections: set[Watched] = set()
        self._expired = False
        self._finished = False
        _WATCHDOG.schedule(self)

    @property
    def finished(self) -> bool:
        """Whether the download is over (the watchdog then forgets it)."""
        return self._finished

    @property
    def expired(self) -> bool:
        """Whether the time is up."""
        return self._expired or time.monotonic() >= self.at

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the download started."""
        return time.monotonic() - self.start

    def watch(self, connection: Watched) -> None:
        """Shut `connection` when the time is up (at once if it already is)."""
        with self._lock:
            if self._finished:
                return
            self._connections.add(connection)
            if self._expired:
                _shut(connection)

    def finish(self) -> None:
        """End the download: its connections go back to the pool untouched."""
        with self._lock:
            self._finished = True
            self._connections.clear()

    def expire(self) -> None:
        """Shut the connections in use (called by the watchdog when the time is up)."""
        with self._lock:
            if self._finished:
                return
            self._expired = True
            for connection in self._connections:
                _shut(connection)


@contextlib.contextmanager
def deadline_scope(seconds: float) -> Iterator[Deadline]:
    """Run a download on this thread under a new `Deadline` of `seconds`."""
    deadline = Deadline(seconds)
    previous = getattr(_current, "deadline", None)
    _current.deadline = deadline
    try:
        yield deadline
    finally:
        _current.deadline = previous
        deadline.finish()


class _Watchdog:
    """One thread per process that expires download deadlines when they pass.

    A `threading.Timer` per download would start a thread for every file,
    and starting a thread waits for it to get the GIL: under load that is
    milliseconds on each download's path.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            # The thread does not survive a fork, and the lock may be held by
            # a thread that no longer exists in the child.
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._running = False

    def schedule(self, deadline: Deadline) -> None:
        with self._cond:
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="fetch-deadlines", daemon=True).start()
            heapq.heappush(self._heap, (deadline.at, next(self._seq), deadline))
            if self._heap[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        # Only a forked child resets the watchdog, and this thread is not in it.
        cond, heap = self._cond, self._heap
        with cond:
            while True:
                while heap and heap[0][2].finished:
                    heapq.heappop(heap)
                if not heap:
                    cond.wait()
                    continue
                delay = heap[0][0] - time.monotonic()
                if delay > 0:
                    cond.wait(delay)
                    continue
                heapq.heappop(heap)[2].expire()


_WATCHDOG = _Watchdog()


def _shut(connection: Watched) -> None:
    sock = connection.sock
    if sock is None:
        return
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter would tear
    # down the TLS object under the reading thread; this only ends the TCP
    # stream, so the blocked read returns and raises.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch(connection: HTTPConnection) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(connection)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _watch(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        # Also reached by reused keep-alive connections, which skip connect().
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    """The same hooks; `super()` then reaches HTTPSConnection's TLS connect."""


class WatchedHTTPPool(HTTPConnectionPool):
    """An HTTP pool whose connections obey the current thread's `deadline_scope`."""

    ConnectionCls = _WatchedHTTPConnection


class WatchedHTTPSPool(HTTPSConnectionPool):
    """An HTTPS pool whose connections obey the current thread's `deadline_scope`."""

    ConnectionCls = _WatchedHTTPSConnection
