"""A gunicorn worker that reads each request whole before a thread is spent on it.

Gunicorn's gthread worker hands a connection to a thread as soon as its first
byte arrives, and the thread then reads the rest blocking: a client that
sends one byte a second holds a thread for as long as it likes, and a few
dozen such clients stall every worker. `BufferingWorker` keeps a connection
in the worker's event loop (costing a socket and a buffer, not a thread)
until its headers and body are complete, then hands the complete request to
a thread, which parses it from memory. A request must arrive at a minimum
pace: headers within `HEADER_SECONDS`, the body within `BODY_GRACE_SECONDS`
plus its length at `MIN_BODY_RATE`. A client that is slower is answered 408
and cut off. Twilio sends each webhook whole and at once, so it never comes
near these limits.

Writes by a thread (the answer) and reads past the buffer (a body larger
than `MAX_BUFFERED`) use a socket timeout, `THREAD_IO_SECONDS`, so a client
that stops reading or sending mid-way frees its thread too.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

HEADER_SECONDS = 5.0
BODY_GRACE_SECONDS = 5.0
MIN_BODY_RATE = 16 * 1024  # bytes a second
MAX_HEADER_BYTES = 32 * 1024
MAX_BUFFERED = 1024 * 1024
THREAD_IO_SECONDS = 10.0
CHUNKED_SECONDS = 10.0

_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 44\r\n\r\nthe request did not arrive quickly enough.\r\n"
)


class BufferedSocket:
    """A client socket whose first reads come from bytes the event loop already read."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | _Detached = sock
        self._pending = b""
        #: Bytes taken back from the buffer to start the next request with.
        self.taken = b""

    def take_pending(self) -> bool:
        """Move unread buffered bytes to `taken`; whether there were any."""
        self.taken, self._pending = self._pending, b""
        return bool(self.taken)

    def feed(self, data: bytes) -> None:
        """Bytes to return before reading the socket again."""
        self._pending += data

    def recv(self, size: int, *flags: int) -> bytes:
        """Buffered bytes first, then the socket (with the thread I/O timeout)."""
        if self._pending:
            out, self._pending = self._pending[:size], self._pending[size:]
            return out
        return self._sock.recv(size, *flags)

    def setblocking(self, flag: bool) -> None:
        """Blocking for a thread means a bounded wait: never an unbounded one."""
        if flag:
            self._sock.settimeout(THREAD_IO_SECONDS)
        else:
            self._sock.setblocking(False)

    def fileno(self) -> int:
        """The socket's descriptor (for the selector and sendfile)."""
        return self._sock.fileno()

    @property
    def detached(self) -> bool:
        """Whether the connection was handed to someone else (`detach`)."""
        return isinstance(self._sock, _Detached)

    def detach(self) -> socket.socket:
        """Hand the connection over (to the live-update hub) after the response head.

        Gunicorn still finishes "its" response afterwards: the last chunk and
        the close it writes go nowhere, and `finish_request` forgets the
        connection instead of keeping it alive.
        """
        sock, self._sock = self._sock, _Detached()
        assert isinstance(sock, socket.socket), "handed over twice"
        return sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Detached:
    """What a BufferedSocket talks to once its connection has been handed over."""

    def send(self, data: bytes, *flags: int) -> int:
        return len(data)

    def sendall(self, data: bytes, *flags: int) -> None:
        return None

    def recv(self, size: int, *flags: int) -> bytes:
        return b""

    def fileno(self) -> int:
        return -1

    def __getattr__(self, name: str) -> Any:
        # close, shutdown, setblocking, settimeout...: nothing left to act on.
        return lambda *args, **kwargs: None


@dataclass
class Reading:
    """A connection whose request is still arriving."""

    conn: Any
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    header_end: int = -1
    body_length: int | None = None
    chunked: bool = False


def request_complete(state: Reading, now: float) -> bool:
    """Whether `state.buf` holds a whole request (or enough for the parser to refuse it).

    Updates the deadline once the headers are in: the body gets its own
    allowance, in proportion to its declared length.
    """
    buf = state.buf
    if state.header_end < 0:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return len(buf) > MAX_HEADER_BYTES  # gunicorn refuses it from memory
        state.header_end = end + 4
        head = bytes(buf[:end]).split(b"\r\n")[1:]
        lengths, chunked, expect = [], False, False
        for line in head:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                lengths.append(value.strip())
            elif key == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
            elif key == b"expect":
                expect = value.strip().lower() == b"100-continue"
        if chunked:
            state.chunked = True
            state.deadline = now + CHUNKED_SECONDS
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                return True  # gunicorn answers 400
            state.body_length = int(lengths[0])
            if state.body_length > MAX_BUFFERED:
                return True  # too big to buffer: the app refuses it (413) or a thread reads it
            state.deadline = now + BODY_GRACE_SECONDS + state.body_length / MIN_BODY_RATE
        else:
            state.body_length = 0
        if expect and (state.chunked or state.body_length):
            # The client waits for this before sending the body; the thread
            # will send it again, which HTTP/1.1 clients ignore (RFC 9110 15.2).
            with contextlib.suppress(OSError):
                state.conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    if state.chunked:
        return _chunked_complete(buf, state.header_end) or len(buf) > MAX_BUFFERED
    assert state.body_length is not None
    return len(buf) >= state.header_end + state.body_length


def _chunked_complete(buf: bytearray, pos: int) -> bool:
    """Whether a chunked body starting at `pos` has reached its last chunk and trailers."""
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return False
        size_text = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return True  # malformed: gunicorn refuses it
        if size == 0:
            # No trailers ("0\r\n\r\n"), or trailers that end with an empty line.
            return buf.startswith(b"\r\n", line_end + 2) or buf.find(b"\r\n\r\n", line_end) >= 0
        pos = line_end + 2 + size + 2
        if pos > len(buf):
            return False


class BufferingWorker(ThreadWorker):
    """gthread, but a thread only ever gets a request that has fully arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: dict[int, Reading] = {}

    def accept(self, listener: Any) -> None:
        """Take a new connection into the event loop until its request is in."""
        if self.cfg.is_ssl:
            # TLS bytes cannot be framed before the handshake: gthread as it is
            # (terminate TLS in a proxy in front to keep the protection).
            super().accept(listener)
            return
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = TConn(self.cfg, BufferedSocket(client), address, listener.getsockname())
        self._read(conn, time.monotonic() + HEADER_SECONDS)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection's next request: read it whole first, too."""
        if self.cfg.is_ssl:
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read(conn, time.monotonic() + HEADER_SECONDS)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """Gunicorn's hand-back, plus: a next request already buffered is read from memory,
        and a connection handed to the live-update hub is only forgotten."""
        if getattr(conn.sock, "detached", False):
            self.nr_conns -= 1
            return
        super().finish_request(conn, fs)
        if self.cfg.is_ssl:
            return
        if conn in self.keepalived_conns and conn.sock.take_pending():
            # Pipelined bytes the parser did not need: the socket will not turn
            # readable for them, so they start the next request's reading now.
            self.on_client_socket_readable(conn, conn.sock)

    def _read(self, conn: Any, deadline: float) -> None:
        conn.sock.setblocking(False)
        state = Reading(conn, deadline, bytearray(conn.sock.taken))
        conn.sock.taken = b""
        self.reading[conn.sock.fileno()] = state
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, state))
        if state.buf and request_complete(state, time.monotonic()):
            self._hand_over(state)

    def _readable(self, state: Reading, _sock: Any) -> None:
        try:
            chunk = state.conn.sock._sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(state)  # the client went away before its request was whole
            return
        state.buf += chunk
        if request_complete(state, time.monotonic()):
            self._hand_over(state)

    def _hand_over(self, state: Reading) -> None:
        self._forget(state)
        state.conn.sock.feed(bytes(state.buf))
        state.conn.data_ready = True
        self.enqueue_req(state.conn)

    def _forget(self, state: Reading) -> None:
        self.reading.pop(state.conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(state.conn.sock)

    def _drop(self, state: Reading, answer: bytes = b"") -> None:
        self._forget(state)
        if answer:
            with contextlib.suppress(OSError):
                state.conn.sock._sock.send(answer)  # best effort: never wait for a slow reader
        self.nr_conns -= 1
        state.conn.close()

    def murder_pending(self) -> None:
        """Gunicorn's idle-connection sweep, plus: cut off requests past their deadline."""
        super().murder_pending()
        now = time.monotonic()
        for state in [s for s in self.reading.values() if s.deadline <= now]:
            self._drop(state, _TIMEOUT_ANSWER)
