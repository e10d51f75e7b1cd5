"""GET /api/stream against real `serve` processes (SQLite and PostgreSQL), and the hub's bounds."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests

from receiver.index import MediaIndex
from receiver.index.live import RETENTION, LiveCursor, live_rows, write_live
from receiver.index.livefeed import LiveFeed
from receiver.index.schema import utcnow
from receiver.simulate import post_signed
from receiver.streamhub import RESET, StreamHub, StreamsFull
from tests.conftest import AUTH, TOKEN, base_env
from tests.support.loopback import serving
from tests.support.webhooks import inbound_params, new_sid

OURS = "+15557654321"


class Reader:
    """An open stream read on a thread: its frames, parsed, arrive in `frames`."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, query: str = "") -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.conn.request("GET", "/api/stream" + query, headers={**AUTH, **(headers or {})})
        # Kept: http.client hands the socket to the response of a stream that ends in a close.
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        frame: dict[str, Any] = {}
        try:
            while line_bytes := self.resp.readline():
                line = line_bytes.decode().rstrip("\n")
                self.raw.append(line)
                if line == "":
                    if "data" in frame:
                        self.frames.put(frame)
                    frame = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    frame[name] = json.loads(value) if name == "data" else value
        except Exception:  # noqa: BLE001 - the test closed the stream mid-read
            pass

    def next(self, timeout: float = 5.0, *, type_: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.frames.get(timeout=max(0.01, deadline - time.monotonic()))
            if type_ is None or frame["data"]["type"] == type_:
                return frame

    def close(self) -> None:
        # Shutting the socket wakes the reading thread at once.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.resp.close()
        self.conn.close()


def _webhook(url: str, customer: str, body: str) -> str:
    sid = new_sid("SM")
    params = inbound_params(sid, body=body, from_=customer, to=OURS)
    resp = post_signed(f"{url}/twilio/messaging", params, TOKEN)
    assert resp.status_code == 200, resp.text
    return sid


@pytest.fixture(params=["sqlite", "postgresql"])
def hosts(
    request: pytest.FixtureRequest, tmp_path: Path, live_server: Any
) -> Iterator[tuple[str, str]]:
    """(where streams are read, where webhooks arrive): on SQLite one `serve` with two
    workers, so the two may be different processes; on PostgreSQL two `serve`
    processes sharing the database, as two hosts behind a load balancer would."""
    args = ["--workers", "2", "--threads", "2"]
    if request.param == "sqlite":
        server = live_server(base_env(tmp_path), args)
        yield server.url, server.url
        return
    env = base_env(tmp_path, RECEIVER_DATABASE_URL=request.getfixturevalue("pg_url"))
    yield live_server(env, args).url, live_server(env, ["--workers", "1"]).url


def test_events_have_ids_and_json_data_and_resume_after_last_event_id(
    hosts: tuple[str, str],
) -> None:
    streams, hooks = hosts
    reader = Reader(streams)
    try:
        assert reader.status == 200
        assert reader.resp.headers["Content-Type"].startswith("text/event-stream")
        assert reader.resp.headers["X-Accel-Buffering"] == "no"
        customer = "+15550001001"
        started = time.monotonic()
        first = _webhook(hooks, customer, "first")
        frame = reader.next(type_="message.received")
        assert time.monotonic() - started < 2.0
        assert frame["data"]["message_sid"] == first
        assert frame["data"]["thread"] == f"{OURS}~{customer}"
        assert frame["data"]["direction"] == "inbound"
        assert frame["id"] == frame["data"]["id"]
        assert LiveCursor.decode(frame["id"]) is not None
        assert reader.raw[0].startswith("retry: ")
    finally:
        reader.close()

    # Two messages arrive while nobody listens; a reconnect gets exactly those, in order.
    second = _webhook(hooks, customer, "second")
    third = _webhook(hooks, "+15550001002", "third")
    resumed = Reader(streams, {"Last-Event-ID": frame["id"]})
    try:
        got = [resumed.next(type_="message.received")["data"] for _ in range(2)]
        assert [g["message_sid"] for g in got] == [second, third]
        assert got[1]["thread"] == f"{OURS}~+15550001002"
        with pytest.raises(queue.Empty):
            resumed.next(timeout=0.6, type_="message.received")
    finally:
        resumed.close()

    # A stream for one thread hears only that thread.
    query = f"?thread={quote(f'{OURS}~{customer}')}&after={frame['id']}"
    filtered = Reader(streams, query=query)
    try:
        assert filtered.next(type_="message.received")["data"]["message_sid"] == second
        with pytest.raises(queue.Empty):
            filtered.next(timeout=0.6, type_="message.received")
    finally:
        filtered.close()


def test_the_stream_needs_credentials_and_a_well_formed_resume_point(
    live_server: Any, tmp_path: Path
) -> None:
    server = live_server(
        base_env(tmp_path, RECEIVER_STREAM_MAX="1"), ["--workers", "1", "--threads", "2"]
    )
    assert requests.get(server.url + "/api/stream", timeout=5).status_code == 401
    bad = requests.get(
        server.url + "/api/stream", headers={**AUTH, "Last-Event-ID": "x"}, timeout=5
    )
    assert bad.status_code == 400
    assert (
        requests.get(
            server.url + "/api/stream", params={"thread": "nope"}, headers=AUTH, timeout=5
        ).status_code
        == 400
    )

    # The cap: one stream in this one process; the next is told to come back later.
    first = Reader(server.url)
    try:
        assert first.status == 200
        refused = requests.get(server.url + "/api/stream", headers=AUTH, timeout=5)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        assert refused.json()["error"] == "streams_full"
        # The open stream does not hold a request thread: webhooks are still answered.
        sid = _webhook(server.url, "+15550002001", "still answered")
        assert first.next(type_="message.received")["data"]["message_sid"] == sid
    finally:
        first.close()
    # The place is given back once the client has gone.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        again = requests.get(server.url + "/api/stream", headers=AUTH, stream=True, timeout=5)
        status = again.status_code
        again.close()
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200


# -- the hub itself, with real sockets ------------------------------------------------


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[tuple[MediaIndex, LiveFeed]]:
    index = MediaIndex.open(f"sqlite:///{tmp_path / 'index.db'}")
    yield index, LiveFeed(index.engine, begin=index.begin)
    index.close()


def _pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        # A small receive window: the server's sends stop early when nobody reads.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return client, server


def _write(index: MediaIndex, n: int) -> None:
    rows = live_rows((("message.received", new_sid("SM"), {}) for _ in range(n)), utcnow())
    with index.begin() as conn:
        write_live(conn, rows)


def test_a_client_that_never_reads_is_dropped_with_bounded_memory(
    feed: tuple[MediaIndex, LiveFeed],
) -> None:
    index, live = feed
    limit = 32 * 1024
    hub = StreamHub(live, max_streams=4, poll_seconds=0.02, max_buffer=limit)
    client, server = _pair()
    reader_client, reader_server = _pair()
    try:
        hub.reserve()
        hub.adopt(server, None, None, chunked=False)
        hub.reserve()
        hub.adopt(reader_server, None, None, chunked=False)
        received = bytearray()
        peak = 0
        deadline = time.monotonic() + 20
        while hub.dropped_slow == 0 and time.monotonic() < deadline:
            _write(index, 100)
            reader_client.settimeout(0.05)
            try:
                while chunk := reader_client.recv(65536):
                    received += chunk
            except TimeoutError:
                pass
            peak = max(peak, max((len(s.out) for s in list(hub._subs)), default=0))
        assert hub.dropped_slow == 1
        assert peak <= limit + 1024  # at most one frame past the limit, then dropped
        # The reading client keeps its stream; the silent one was closed.
        assert hub.open_streams() == 1
        assert received.count(b"\ndata: ") > 100
        client.settimeout(2)
        ended = False
        try:
            while client.recv(65536):
                pass
            ended = True  # the bytes already sent, then the server's close
        except ConnectionResetError:
            ended = True
        except TimeoutError:
            pass
        assert ended
    finally:
        hub.close()
        for sock in (client, reader_client):
            sock.close()


def test_the_cap_counts_streams_until_they_end(feed: tuple[MediaIndex, LiveFeed]) -> None:
    _, live = feed
    hub = StreamHub(live, max_streams=1, poll_seconds=0.02)
    try:
        hub.reserve()
        with pytest.raises(StreamsFull):
            hub.reserve()
        client, server = _pair()
        hub.adopt(server, None, None, chunked=True)
        client.close()  # the hub notices the hang-up and gives the place back
        deadline = time.monotonic() + 5
        while hub.open_streams() and time.monotonic() < deadline:
            time.sleep(0.02)
        hub.reserve()
        assert hub.open_streams() == 1
    finally:
        hub.close()


def test_a_resume_older_than_what_is_kept_is_told_to_reload(
    feed: tuple[MediaIndex, LiveFeed],
) -> None:
    index, live = feed
    _write(index, 5)
    kept = live.after(LiveCursor())
    assert [e.cursor.id for e in kept] == [1, 2, 3, 4, 5]
    hub = StreamHub(live, max_streams=4, poll_seconds=0.02)
    client, server = _pair()
    try:
        # Kept: a resume from id 2 gets 3, 4 and 5 (from the index: the hub started later).
        _write(index, 1)
        hub.reserve()
        hub.adopt(server, LiveCursor(2), None, chunked=False)
        client.settimeout(5)
        got = b""
        while got.count(b"\n\n") < 4:
            got += client.recv(65536)
        assert [int(i) for i in re.findall(rb"^id: (\d+)$", got, re.M)] == [3, 4, 5, 6]
    finally:
        hub.close()
        client.close()

    # Pruned (older than the retention): the page is told to reload instead.
    assert live.prune(utcnow() + RETENTION + timedelta(seconds=1)) == 6
    _write(index, 1)
    hub = StreamHub(live, max_streams=4, poll_seconds=0.02)
    client, server = _pair()
    try:
        hub.reserve()
        hub.adopt(server, LiveCursor(2), None, chunked=False)
        client.settimeout(5)
        got = b""
        while b"\n\n" not in got:
            got += client.recv(65536)
        assert got.startswith(RESET)
    finally:
        hub.close()
        client.close()


def test_servers_that_keep_the_socket_stream_from_the_request_thread(make_app: Any) -> None:
    app = make_app()
    with serving(app) as url:
        reader = Reader(url)
        try:
            assert reader.status == 200
            sid = _webhook(url, "+15550004001", "through the development server")
            frame = reader.next(type_="message.received")
            assert frame["data"]["message_sid"] == sid
            assert app.extensions["receiver"].live.open_streams() == 1
        finally:
            reader.close()


def test_open_streams_and_slow_drops_are_in_the_metrics(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process's own registry and in-memory values: an earlier test of the session may
    # have switched the process to multiprocess mode (`metrics.setup_multiprocess`).
    from prometheus_client import values

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    app = make_app()
    client = app.test_client()
    hub = app.extensions["receiver"].live

    def figures() -> tuple[float, float]:
        # Other tests' apps in this process share the figures: compare before and after.
        text = client.get("/metrics").get_data(as_text=True)
        streams = re.search(r"^mmsr_live_streams ([0-9.]+)$", text, re.M)
        dropped = re.search(r"^mmsr_live_streams_dropped_total ([0-9.]+)$", text, re.M)
        assert streams is not None and dropped is not None, text
        return float(streams[1]), float(dropped[1])

    hub.reserve()
    hub.reserve()
    open_before, dropped_before = figures()
    hub.release(dropped_slow=True)
    open_after, dropped_after = figures()
    assert open_after == open_before - 1 == hub.open_streams()
    assert dropped_after == dropped_before + 1
