"""A business's webhook receiver as a real process on loopback, verifying with `standardwebhooks`.

Run as ``python -m tests.support.hookserver PORT [SECRET...]``. Every POST is verified
with the `standardwebhooks` library from PyPI (never with our own code)
against each secret it was given, and recorded. Tests steer it over HTTP:

* ``POST /_control`` with ``{"mode": ..., "secrets": [...]}``: ``ok`` (204),
  ``status:N``, ``redirect``, ``slow:SECONDS`` (answers late), ``reset``
  (closes the connection with a TCP reset);
* ``GET /_received``: every request so far, as JSON (with HOOKSERVER_LOG set,
  each is also appended to that file, so the record survives restarts).

`HookServer` starts, stops and restarts it (on the same port).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.support.services import free_port, port_open


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = "ok"
        self.secrets: list[str] = []
        self.received: list[dict[str, Any]] = []


STATE = _State()
LOG = os.environ.get("HOOKSERVER_LOG", "")
# Benchmarks: record only the id and the arrival time, and answer 204 at once,
# so the receiver sharing the machine costs the sender as little as it can.
LEAN = os.environ.get("HOOKSERVER_LEAN") == "1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        """The record of what arrived."""
        with STATE.lock:
            body = json.dumps(STATE.received).encode()
        self._answer(200, body, {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        """A control request, or an event to verify and record."""
        expected = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(expected)
        if len(body) < expected:
            # The sender died mid-request (a SIGKILLed worker): nothing was delivered.
            self.close_connection = True
            return
        if self.path == "/_control":
            wanted = json.loads(body)
            with STATE.lock:
                STATE.mode = wanted.get("mode", STATE.mode)
                STATE.secrets = wanted.get("secrets", STATE.secrets)
                if wanted.get("clear"):
                    STATE.received = []
            self._answer(204)
            return
        if LEAN:
            with STATE.lock:
                STATE.received.append({"id": self.headers.get("webhook-id"), "at": time.time()})
            self._answer(204)
            return
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        headers = {k.lower(): v for k, v in self.headers.items()}
        with STATE.lock:
            mode, secrets = STATE.mode, list(STATE.secrets)
        verified = None
        for n, secret in enumerate(secrets):
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified = n
            break
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        record = {
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "verified_with": verified,
            "type": doc.get("type"),
            "body": doc,
            "mode": mode,
            "path": self.path,
            "at": time.time(),
        }
        with STATE.lock:
            STATE.received.append(record)
            if LOG:
                # What arrived outlives the process (a receiver restarted mid-run).
                with open(LOG, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
        if mode == "ok":
            self._answer(204)
        elif mode.startswith("status:"):
            self._answer(int(mode.split(":")[1]), b"failing on purpose " * 100)
        elif mode == "redirect":
            self._answer(302, b"", {"Location": "http://127.0.0.1:9/elsewhere"})
        elif mode.startswith("slow:"):
            time.sleep(float(mode.split(":")[1]))
            self._answer(204)
        elif mode == "reset":
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    port = int(sys.argv[1])
    STATE.secrets = sys.argv[2:]
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    server.serve_forever(0.05)


class HookServer:
    """The receiver process: start, stop, restart on the same port, steer, read."""

    def __init__(
        self, port: int | None = None, *, log: Path | None = None, lean: bool = False
    ) -> None:
        self.port = port or free_port()
        self.log = log
        self.lean = lean
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, secrets: list[str] | None = None) -> HookServer:
        """Start the process (verifying with `secrets`) and wait until it accepts connections."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.hookserver", str(self.port), *(secrets or [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2],
            env={
                **os.environ,
                "HOOKSERVER_LOG": str(self.log or ""),
                "HOOKSERVER_LEAN": "1" if self.lean else "",
            },
        )
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", self.port, timeout=0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the hook server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Kill the process (what it recorded is lost: read it first)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def control(self, mode: str | None = None, secrets: list[str] | None = None) -> None:
        """Set how it answers and which secrets it verifies with."""
        wanted: dict[str, Any] = {}
        if mode is not None:
            wanted["mode"] = mode
        if secrets is not None:
            wanted["secrets"] = secrets
        requests.post(self.url + "/_control", json=wanted, timeout=5).raise_for_status()

    def reset(self) -> None:
        """Back to answering 204 with no secrets and nothing recorded (a fresh receiver)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        requests.post(
            self.url + "/_control", json={"mode": "ok", "secrets": [], "clear": True}, timeout=5
        ).raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        """Every event request it got, oldest first (with `log`: across restarts too)."""
        if self.log is not None:
            if not self.log.exists():
                return []
            return [json.loads(line) for line in self.log.read_text().splitlines() if line]
        answer = requests.get(self.url + "/_received", timeout=5)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()
        return result


if __name__ == "__main__":
    main()
