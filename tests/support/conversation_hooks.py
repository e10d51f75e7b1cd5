"""Conversations' side of its post-event webhooks, against a running service on loopback.

`ConversationsHookSender` posts a signed form webhook the way Conversations
does (https://www.twilio.com/docs/conversations/conversations-webhooks):
`X-Twilio-Signature` over the URL and the form, an `I-Twilio-Idempotency-Token`,
and Conversations' 5 second timeout. It measures each answer; a delivery that
is not answered 2xx inside the timeout is sent again with `RetryCount` one
higher, as a webhook with retries configured is.

`FlakyFront` stands between the two on its own loopback port (the service's
public URL): it forwards each request to the service, and for the first
deliveries it is told about it either answers 502 without forwarding (the
request never arrived) or forwards it and holds the answer past the timeout
(the request arrived, Conversations gave up on it).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlencode

import requests

from receiver.twilio.signature import compute_signature
from tests.support.loopback import handler_server

#: Conversations waits this long for a webhook's answer.
WEBHOOK_TIMEOUT = 5.0


@dataclass(frozen=True)
class Delivery:
    """One attempt: its RetryCount, the HTTP status (None: no answer in time), the time."""

    retry_count: int
    status: int | None
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Answered 2xx within the webhook timeout."""
        return (
            self.status is not None
            and 200 <= self.status < 300
            and (self.seconds <= WEBHOOK_TIMEOUT)
        )


class ConversationsHookSender:
    """Posts signed Conversations webhooks to `url`, retrying what fails with RetryCount."""

    def __init__(
        self, url: str, token: str, *, retries: int = 2, timeout: float = WEBHOOK_TIMEOUT
    ) -> None:
        self.url = url
        self.token = token
        self.retries = retries
        self.timeout = timeout
        self.session = requests.Session()

    def send(self, params: Sequence[tuple[str, str]]) -> list[Delivery]:
        """Deliver one event until answered in time (or out of retries); every attempt."""
        token = secrets.token_hex(16)
        attempts: list[Delivery] = []
        for retry in range(self.retries + 1):
            form = [(k, v) for k, v in params if k != "RetryCount"] + [("RetryCount", str(retry))]
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": compute_signature(self.token, self.url, form),
                "I-Twilio-Idempotency-Token": token,
            }
            started = time.monotonic()
            try:
                answer = self.session.post(
                    self.url, data=urlencode(form), headers=headers, timeout=self.timeout
                )
                delivery = Delivery(retry, answer.status_code, time.monotonic() - started)
            except requests.RequestException as exc:
                delivery = Delivery(retry, None, time.monotonic() - started, type(exc).__name__)
            attempts.append(delivery)
            if delivery.ok:
                break
        return attempts

    def close(self) -> None:
        """Release the connection pool."""
        self.session.close()


class FlakyFront:
    """A forwarding front on 127.0.0.1 whose first deliveries fail as configured."""

    def __init__(self, backend: str) -> None:
        self.backend = backend.rstrip("/")
        #: Faults for the next requests, in order: "502" or "hold" (answer after `hold`).
        self.faults: list[str] = []
        self.hold = WEBHOOK_TIMEOUT + 1.0
        #: How many requests reached the service through this front.
        self.forwarded = 0
        self._lock = threading.Lock()
        self._server, self._thread = handler_server(self._handle, get=False)

    @property
    def url(self) -> str:
        """The public base URL (RECEIVER_PUBLIC_URL)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FlakyFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        with self._lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault == "502":
            self._answer(req, 502, b"bad gateway", "text/plain")
            return
        headers = {
            k: v for k, v in req.headers.items() if k.lower() not in ("host", "content-length")
        }
        answer = requests.post(self.backend + req.path, data=body, headers=headers, timeout=30)
        with self._lock:
            self.forwarded += 1
        if fault == "hold":
            time.sleep(self.hold)
        with contextlib.suppress(OSError):  # the sender may have given up already
            self._answer(
                req, answer.status_code, answer.content, answer.headers.get("Content-Type", "")
            )

    @staticmethod
    def _answer(req: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str) -> None:
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)
