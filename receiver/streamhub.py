"""Live updates: one thread per server process writes every open event stream.

An open `GET /api/stream` must not hold one of gunicorn's request threads
(they answer Twilio's webhooks). The view checks the caller and the cap,
sends the response head, and hands the socket to this process's
`StreamHub`. One hub thread then reads the index for new live rows (one
query per poll for all streams of the process, none when no stream is
open), frames each as a Server-Sent Event and writes it, non-blocking, to
every stream it concerns, with a selector that also notices clients that
hang up. A client that does not read fills its socket buffer, then at most
`MAX_BUFFER` bytes here, and is dropped: memory is bounded whatever the
clients do. Design: docs/design.md ("Live updates").

Servers that cannot hand over a socket (Flask's development server, the
test client, gunicorn's own TLS) stream from the request thread instead,
fed by the same hub through a bounded queue, and count against the same cap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from receiver.errors import ReceiverError
from receiver.index.live import LiveCursor, LiveEvent
from receiver.index.livefeed import LiveFeed

log = logging.getLogger(__name__)

#: How often the hub reads the index while streams are open (the 2 s promise needs < 1 s).
POLL_SECONDS = 0.25
#: A comment line this often keeps proxies and load balancers from closing idle streams.
HEARTBEAT_SECONDS = 15.0
#: Bytes held for a stream that does not read (beyond its socket buffer); past it: dropped.
MAX_BUFFER = 256 * 1024
#: Bytes a stream's client may send after its request before it is dropped.
MAX_INBOUND = 16 * 1024
#: Recent events kept in memory, so most resumes cost no query.
RECENT = 2000
#: Events a resume may replay from the index; older gaps get `reset` (reload the page).
BACKLOG = 1000
#: How long a gap in the ids (PostgreSQL: a transaction still committing) holds back
#: the events after it; a gap still open then was a rollback.
GAP_SECONDS = 1.0
#: How often the hub deletes expired live rows.
PRUNE_SECONDS = 600.0
#: The browser's reconnection delay, sent first on every stream (milliseconds).
RETRY_MS = 2000

#: The first bytes of every stream.
PREAMBLE = f"retry: {RETRY_MS}\n: stream open\n\n".encode()
HEARTBEAT = b": keep-alive\n\n"
RESET = b'data: {"type":"reset"}\n\n'


class StreamsFull(ReceiverError):
    """This process already serves as many streams as RECEIVER_STREAM_MAX allows."""


@dataclass(eq=False)
class Subscriber:
    """One open stream: where it is in the feed, what it wants, what waits to be sent."""

    cursor: LiveCursor | None
    thread: str | None
    sock: socket.socket | None = None
    chunked: bool = False
    inbox: queue.Queue[bytes | None] | None = None
    out: bytearray = field(default_factory=bytearray)
    received: int = 0
    writing: bool = False
    closed: bool = False

    def wants(self, event: LiveEvent) -> bool:
        return self.thread is None or event.thread == self.thread


class StreamHub:
    """This process's open streams and the one thread that feeds them."""

    def __init__(
        self,
        feed: LiveFeed,
        *,
        max_streams: int,
        poll_seconds: float = POLL_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        max_buffer: int = MAX_BUFFER,
        observer: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.feed = feed
        #: Told the open streams after each change, and whether a slow client was dropped.
        self.observer = observer
        self.max_streams = max_streams
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.max_buffer = max_buffer
        self._lock = threading.Lock()
        self._reserved = 0
        self._pending: deque[Subscriber] = deque()
        self._subs: set[Subscriber] = set()
        self._recent: deque[LiveEvent] = deque(maxlen=RECENT)
        self._cursor: LiveCursor | None = None
        self._floor: LiveCursor | None = None  # everything after it is in `_recent`
        self._gap_since: float | None = None
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        #: Streams dropped because their client did not read (for tests and metrics).
        self.dropped_slow = 0

    # -- called from request threads ------------------------------------------

    def open_streams(self) -> int:
        """Streams this process serves or is about to."""
        with self._lock:
            return self._reserved

    def reserve(self) -> None:
        """Count one more stream, or raise StreamsFull at the cap."""
        with self._lock:
            if self._reserved >= self.max_streams:
                raise StreamsFull(f"{self._reserved} live streams open in this process")
            self._reserved += 1
            self._observe(self._reserved, dropped_slow=False)

    def release(self, *, dropped_slow: bool = False) -> None:
        """Give back a stream's place (it ended, or it never started)."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)
            self._observe(self._reserved, dropped_slow=dropped_slow)

    def _observe(self, open_streams: int, *, dropped_slow: bool) -> None:
        if self.observer is not None:
            self.observer(open_streams, dropped_slow)

    def adopt(
        self, sock: socket.socket, cursor: LiveCursor | None, thread: str | None, *, chunked: bool
    ) -> None:
        """Take over a reserved stream's socket (its response head is already sent)."""
        sock.setblocking(False)
        self._submit(Subscriber(cursor, thread, sock=sock, chunked=chunked))

    def iterate(self, cursor: LiveCursor | None, thread: str | None) -> QueueStream:
        """A reserved stream served by the calling thread (servers that keep the socket)."""
        sub = Subscriber(cursor, thread, inbox=queue.Queue(maxsize=256))
        self._submit(sub)
        return QueueStream(self, sub)

    def close(self) -> None:
        """Stop the thread and close every stream."""
        self._stop.set()
        self._wake()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(5)

    # -- the hub thread ----------------------------------------------------------

    def _submit(self, sub: Subscriber) -> None:
        with self._lock:
            self._pending.append(sub)
            self._start_locked()
        self._wake()

    def _start_locked(self) -> None:
        # Threads do not survive fork: a hub first used in a new process starts its own.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        self._pid = os.getpid()
        self._stop.clear()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="stream-hub", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        if self._wake_w is None:
            return  # the thread has not started: nothing to wake
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        next_poll = next_prune = time.monotonic()
        next_beat = next_poll + self.heartbeat_seconds
        while not self._stop.is_set():
            now = time.monotonic()
            timeout = min(next_poll, next_beat) - now if self._subs else 1.0
            for key, mask in selector.select(max(0.0, timeout)):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        assert self._wake_r is not None
                        self._wake_r.recv(4096)
                    continue
                sub: Subscriber = key.data
                if mask & selectors.EVENT_READ:
                    self._readable(sub)
                if mask & selectors.EVENT_WRITE and not sub.closed:
                    self._flush(sub)
            try:
                self._take_pending()
                self._reap()
                now = time.monotonic()
                if self._subs and now >= next_poll:
                    next_poll = now + self.poll_seconds
                    self._poll()
                if now >= next_beat:
                    next_beat = now + self.heartbeat_seconds
                    for sub in list(self._subs):
                        if not sub.out:
                            self._send(sub, HEARTBEAT)
                if self._subs and now >= next_prune:
                    next_prune = now + PRUNE_SECONDS
                    self.feed.prune()
            except Exception as exc:  # the index may be away for a while; streams stay open
                log.warning("live updates: reading the index failed (%s); retrying in 2 s", exc)
                next_poll = time.monotonic() + 2.0
        for sub in list(self._subs):
            self._drop(sub)

    def _take_pending(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                sub = self._pending.popleft()
            if sub.sock is not None:
                assert self._selector is not None
                self._selector.register(sub.sock, selectors.EVENT_READ, sub)
            self._subs.add(sub)
            try:
                if self._cursor is None:
                    self._cursor = self._floor = self.feed.head()
                self._catch_up(sub)
            except Exception:
                self._drop(sub)  # the client reconnects and resumes; its place is given back
                raise

    def _catch_up(self, sub: Subscriber) -> None:
        """Bring a new stream from its Last-Event-ID to where the hub is."""
        assert self._cursor is not None and self._floor is not None
        start, sub.cursor = sub.cursor, self._cursor
        if start is None or start >= self._cursor:
            sub.cursor = max(start or self._cursor, self._cursor)
            return
        if start >= self._floor:
            missed = [e for e in self._recent if e.cursor > start]
        else:
            oldest = self.feed.oldest()
            missed = [e for e in self.feed.after(start, limit=BACKLOG) if e.cursor <= self._cursor]
            complete = (
                oldest is not None
                and start >= oldest
                and (len(missed) < BACKLOG or missed[-1].cursor >= self._cursor)
            )
            if not complete:
                self._send(sub, RESET)
                return
        for event in missed:
            if sub.wants(event):
                self._send(sub, event.frame())

    def _ready(self, events: list[LiveEvent]) -> list[LiveEvent]:
        """The events that may go out now: on PostgreSQL, those before an unfilled gap.

        A missing id is a transaction that has not committed yet (it soon
        will) or one that rolled back (it never will): wait up to
        `GAP_SECONDS` for it, then go on without it.
        """
        if not self.feed.gaps_fill_late:
            return events
        assert self._cursor is not None
        expected = self._cursor.id + 1
        for n, event in enumerate(events):
            if event.cursor.id != expected:
                now = time.monotonic()
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < GAP_SECONDS:
                    return events[:n]
                self._gap_since = None  # given up on: the ids in between never committed
            expected = event.cursor.id + 1
        self._gap_since = None
        return events

    def _poll(self) -> None:
        assert self._cursor is not None
        events = self._ready(self.feed.after(self._cursor))
        touched: set[Subscriber] = set()
        for event in events:
            frame = event.frame()
            chunk = b"%x\r\n%s\r\n" % (len(frame), frame)  # framed once, not per stream
            for sub in self._subs:
                if sub.cursor is not None and event.cursor <= sub.cursor:
                    continue
                sub.cursor = event.cursor
                if sub.wants(event) and not sub.closed:
                    if sub.inbox is not None:
                        self._send(sub, frame)
                    else:
                        sub.out += chunk if sub.chunked else frame
                        touched.add(sub)
            if len(self._recent) == self._recent.maxlen:
                self._floor = self._recent[0].cursor
            self._recent.append(event)
            self._cursor = event.cursor
        # One send per stream per poll, however many events the poll found.
        for sub in touched:
            self._settle(sub)

    def _send(self, sub: Subscriber, frame: bytes) -> None:
        if sub.closed:
            return
        if sub.inbox is not None:
            try:
                sub.inbox.put_nowait(frame)
            except queue.Full:
                self.dropped_slow += 1
                self._drop(sub, slow=True)
            return
        sub.out += b"%x\r\n%s\r\n" % (len(frame), frame) if sub.chunked else frame
        self._settle(sub)

    def _settle(self, sub: Subscriber) -> None:
        """Write what the socket takes now; drop a stream whose backlog passed the limit."""
        self._flush(sub)
        if not sub.closed and len(sub.out) > self.max_buffer:
            self.dropped_slow += 1
            self._drop(sub, slow=True)

    def _flush(self, sub: Subscriber) -> None:
        assert sub.sock is not None and self._selector is not None
        try:
            while sub.out:
                sent = sub.sock.send(sub.out)
                del sub.out[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(sub)
            return
        if bool(sub.out) != sub.writing:
            # Asked to wake when writable only while bytes wait (one syscall per change).
            sub.writing = bool(sub.out)
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if sub.writing else 0)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.modify(sub.sock, events, sub)

    def _readable(self, sub: Subscriber) -> None:
        assert sub.sock is not None
        try:
            data = sub.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        sub.received += len(data)
        if not data or sub.received > MAX_INBOUND:
            self._drop(sub)

    def _reap(self) -> None:
        for sub in [s for s in self._subs if s.closed]:
            self._drop(sub)

    def _drop(self, sub: Subscriber, *, slow: bool = False) -> None:
        if sub not in self._subs:
            return
        self._subs.discard(sub)
        sub.closed = True
        if sub.sock is not None:
            assert self._selector is not None
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sub.sock)
            with contextlib.suppress(OSError):
                sub.sock.close()
        if sub.inbox is not None:
            with contextlib.suppress(queue.Full):
                sub.inbox.put_nowait(None)
        self.release(dropped_slow=slow)


class QueueStream:
    """A WSGI body fed by the hub through a bounded queue; `close` ends the stream."""

    def __init__(self, hub: StreamHub, sub: Subscriber) -> None:
        self.hub = hub
        self.sub = sub

    def __iter__(self) -> Iterator[bytes]:
        inbox = self.sub.inbox
        assert inbox is not None
        yield PREAMBLE
        while not self.sub.closed:
            try:
                frame = inbox.get(timeout=self.hub.heartbeat_seconds)
            except queue.Empty:
                frame = HEARTBEAT
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        """The client went away or the server stops: the hub forgets the stream."""
        self.sub.closed = True
        self.hub._wake()
