"""The buffering front: slow clients cost a socket, not a worker thread, and are cut off."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from receiver.httpfront import Reading, request_complete
from receiver.server import gunicorn_options
from tests.reliability.security import check_slow_clients


class FakeConn:
    """Records what the front sends before a thread takes over (100 Continue)."""

    def __init__(self) -> None:
        self.sent = b""
        self.sock = self

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)


def complete(*parts: bytes) -> list[bool]:
    """request_complete after each part arrives."""
    state = Reading(FakeConn(), deadline=100.0)
    out = []
    for part in parts:
        state.buf += part
        out.append(request_complete(state, now=0.0))
    return out


def test_a_request_is_whole_only_with_its_body() -> None:
    head = b"POST /twilio/messaging HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    assert complete(head[:10], head[10:], b"ab", b"cde") == [False, False, False, True]
    assert complete(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"\r\n") == [False, True]


def test_chunked_bodies_end_at_the_last_chunk() -> None:
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert complete(head, b"3\r\nabc\r\n", b"0\r\n", b"\r\n") == [False, False, False, True]
    assert complete(head, b"1;x=y\r\na\r\n0\r\nTrailer: 1\r\n\r\n") == [False, True]
    assert complete(head, b"zz\r\n") == [False, True]  # malformed: gunicorn refuses it


def test_body_deadline_follows_the_declared_length() -> None:
    state = Reading(FakeConn(), deadline=5.0)
    state.buf += b"POST / HTTP/1.1\r\nContent-Length: 163840\r\n\r\n"
    assert not request_complete(state, now=1.0)
    assert state.deadline == pytest.approx(1.0 + 5.0 + 10.0)


def test_expect_continue_is_answered_by_the_front() -> None:
    conn = FakeConn()
    state = Reading(conn, deadline=5.0)
    state.buf += b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    assert not request_complete(state, now=0.0)
    assert conn.sent == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_oversized_or_ambiguous_requests_go_to_the_parser_at_once() -> None:
    assert complete(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n") == [True]
    assert complete(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n") == [True]
    assert complete(b"GET /" + b"a" * 40_000) == [True]


def test_serve_uses_the_buffering_worker() -> None:
    assert gunicorn_options("127.0.0.1", 8080, 2, 8)["worker_class"] == (
        "receiver.httpfront.BufferingWorker"
    )


def test_a_dribbling_client_gets_408_and_is_closed(live_server: Any) -> None:
    server = live_server(args=["--workers", "1", "--threads", "1"])
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    opened = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    answer = b""
    while True:
        try:
            sock.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
        sock.settimeout(1.0)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        answer += data
        if not data or answer.startswith(b"HTTP/1.1 408"):
            break
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - opened < 8
    # The one thread was never taken: a normal request is answered at once.
    import requests

    assert requests.get(server.url + "/healthz", timeout=2).status_code == 200
    sock.close()


@pytest.mark.timeout(120)
def test_slow_clients_do_not_stall_the_service(tmp_path: Path) -> None:
    result = check_slow_clients(tmp_path)
    assert result.slow_opened == 400
    assert result.slow_closed_in_time == 400, result
    assert result.slowest_close < 30
    assert result.healthz_failed == 0
    assert result.healthz_p99 < 0.5, result.healthz_p99
    assert result.webhooks > 0
    assert result.webhooks_ok_in_time == result.webhooks, result


def test_pipelined_keepalive_requests_are_all_answered(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import free_port

    (tmp_path / "tinyapp.py").write_text(
        "def app(environ, start_response):\n"
        "    body = environ['PATH_INFO'].encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(tmp_path),
            "-b",
            f"127.0.0.1:{port}",
            "-k",
            "receiver.httpfront.BufferingWorker",
            "--threads",
            "2",
            "--keep-alive",
            "5",
            "tinyapp:app",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while answer.count(b"HTTP/1.1 200") < 2 or not answer.endswith(b"/two"):
            data = sock.recv(4096)
            assert data, answer
            answer += data
        assert answer.index(b"/one") < answer.index(b"/two")
        sock.close()
    finally:
        proc.terminate()
        proc.wait(15)
