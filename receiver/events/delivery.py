"""Sending one signed event: HTTP POST per Standard Webhooks, or a message on an SQS queue.

HTTP endpoints go through the media fetcher's SSRF rules (`hostrules`,
`pinning`): the host is resolved once, every address must be public unless
the host or host:port is in RECEIVER_EVENT_HOSTS, and the request goes to
the checked address. Redirects are not followed (a redirect is a failure),
and only a 2xx answer counts as delivered.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import certifi
from requests.utils import requote_uri
from urllib3.util.wait import wait_for_read

from receiver.errors import BlockedHost, ConfigError, FetchError
from receiver.media.deadline import Deadline, deadline_scope
from receiver.media.hostrules import HostRules, Target
from receiver.media.pinning import Resolver, resolve_within, system_resolver

log = logging.getLogger(__name__)

#: Standard Webhooks asks senders to time out; 10 s here.
TIMEOUT = 10.0
KEEP = 1024
#: Parsed endpoint URLs kept (endpoints are few; the cache starts over past this).
TARGETS_KEPT = 256
#: Seconds a checked address of an endpoint's host is used before looking it up again.
RESOLVE_TTL = 10.0
USER_AGENT = "mms-receiver-events/1"


@dataclass(frozen=True)
class Sent:
    """What one attempt gave: success, the status, the first 1 KB of the answer, the error."""

    ok: bool
    status: int | None = None
    response: str | None = None
    error: str | None = None
    #: The endpoint could not be reached at all (connect, timeout, reset, blocked):
    #: the rest of its batch waits instead of failing the same way one by one.
    unreachable: bool = False
    duration_ms: int = 0


def _event_hosts_message(text: str) -> str:
    """A host rule's message in the words of events (the rules are the media fetcher's)."""
    for media, events in (
        ("RECEIVER_MEDIA_HOSTS", "RECEIVER_EVENT_HOSTS"),
        ("FetchConfig.allowed_hosts", "RECEIVER_EVENT_HOSTS"),
        ("media is only fetched from", "events are only sent to"),
        ("media URLs", "endpoint URLs"),
        ("media URL", "endpoint URL"),
        ("are fetched", "are accepted"),
    ):
        text = text.replace(media, events)
    return text


class _Connection:
    """One keep-alive connection to an endpoint's checked address.

    A request is written whole in one `sendall` and the answer read by the
    standard library's `http.client.HTTPResponse` (status line, headers,
    chunked or sized bodies, 1xx, `Connection: close`). urllib3's pool and
    `http.client.HTTPConnection` cost three times the CPU a POST for what
    this needs (docs/performance.md). TLS connects to the checked address
    and checks the certificate against the endpoint's own name.
    """

    def __init__(self, key: tuple[str, str, int, str], ssl_context: ssl.SSLContext | None) -> None:
        self.key = key
        self.ssl_context = ssl_context
        self.sock: socket.socket | None = None
        self.busy = threading.Lock()

    def post(self, request: bytes, deadline: Deadline, timeout: float) -> tuple[int, str, bytes]:
        """Send `request`; the status, the Location header and the first KEEP bytes."""
        if self.sock is not None and wait_for_read(self.sock, timeout=0.0):
            # Closed by the endpoint while idle (or it sent unasked-for bytes).
            self.close()
        if self.sock is None:
            _, address, port, name = self.key
            deadline.watch(self)
            sock = socket.create_connection((address, port), timeout=timeout)
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=name)
                except BaseException:
                    sock.close()
                    raise
            self.sock = sock
        deadline.watch(self)
        self.sock.settimeout(max(0.001, deadline.remaining()))
        try:
            self.sock.sendall(request)
            resp = http.client.HTTPResponse(self.sock, method="POST")
            resp.begin()
            head = resp.read(KEEP)
            # The answer was read whole (http.client drops its file at the end),
            # and the endpoint keeps the connection: it carries the next event.
            reusable = resp.isclosed() and not resp.will_close
            resp.close()
        except BaseException:
            self.close()
            raise
        if not reusable:
            self.close()
        return resp.status, resp.getheader("Location") or "", head

    def close(self) -> None:
        """Close the socket (a later `post` connects again)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


class HttpSender:
    """POSTs bodies to http(s) endpoints over one keep-alive connection per endpoint.

    The connection goes to the checked address while TLS checks the
    endpoint's own name; the whole attempt runs under one deadline, whose
    watchdog shuts the socket of an endpoint that answers a byte at a time.
    """

    def __init__(
        self,
        event_hosts: Iterable[str] = (),
        *,
        resolver: Resolver = system_resolver,
        timeout: float = TIMEOUT,
        ca_bundle: str | None = None,
    ) -> None:
        try:
            self.rules = HostRules(event_hosts, require_allowlisted=False)
        except ConfigError as exc:
            raise ConfigError(_event_hosts_message(str(exc))) from None
        self.resolver = resolver
        self.timeout = timeout
        self.ca_bundle = ca_bundle
        self._connections: dict[str, _Connection] = {}
        self._resolved: dict[tuple[str, int], tuple[str, float]] = {}
        self._targets: dict[str, Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def check(self, url: str) -> Target:
        """The URL's target if events may be sent there now; BlockedHost or FetchError if not."""
        try:
            target = self.rules.first(url)
            addresses = resolve_within(self.resolver, target.host, target.port, self.timeout)
            self.rules.check_addresses(target, addresses)
        except BlockedHost as exc:
            raise BlockedHost(_event_hosts_message(str(exc))) from None
        return target

    def send(self, endpoint_id: str, url: str, body: bytes, headers: Mapping[str, str]) -> Sent:
        """POST once; never raises."""
        started = time.monotonic()
        try:
            target = self._target(url)
            address = self._address(target)
        except BlockedHost as exc:
            return Sent(False, error=f"blocked: {_event_hosts_message(str(exc))}", unreachable=True)
        except FetchError as exc:
            return Sent(False, error=str(exc), unreachable=True)
        # Percent-encoded as browsers and requests do (non-ASCII, spaces); existing escapes kept.
        path = requote_uri((target.path or "/") + (f"?{target.query}" if target.query else ""))
        try:
            request = _request(path, target.host_header, headers, body)
        except ValueError as exc:
            return Sent(False, error=f"cannot be sent: {exc}", unreachable=True)
        connection = self._connection(endpoint_id, target, address)
        # Another thread (a test send from the API) is using the kept connection:
        # this attempt gets one of its own.
        own = connection if connection.busy.acquire(blocking=False) else None
        used = own or _Connection(connection.key, connection.ssl_context)
        try:
            with deadline_scope(self.timeout) as deadline:
                status, location, head = used.post(request, deadline, self.timeout)
        except (OSError, http.client.HTTPException) as exc:
            # The deadline's watchdog shuts the socket when the time is up.
            timed_out = isinstance(exc, TimeoutError) or (
                time.monotonic() - started >= self.timeout * 0.95
            )
            if timed_out:
                return self._failed(f"timed out after {self.timeout:g} s", started)
            return self._failed(f"connection failed ({_cause(exc)})", started)
        finally:
            if own is None:
                used.close()
            else:
                own.busy.release()
        ms = int((time.monotonic() - started) * 1000)
        text = head.decode("utf-8", "replace")
        if 200 <= status < 300:
            return Sent(True, status=status, response=text, duration_ms=ms)
        if 300 <= status < 400:
            error = f"HTTP {status} redirect to {location[:200]!r} (redirects are not followed)"
        else:
            error = f"HTTP {status}"
        return Sent(False, status=status, response=text, error=error, duration_ms=ms)

    def _target(self, url: str) -> Target:
        """The parsed endpoint URL, parsed once (an endpoint's URL never changes)."""
        target = self._targets.get(url)
        if target is None:
            target = self.rules.first(url)
            with self._lock:
                if len(self._targets) >= TARGETS_KEPT:
                    self._targets.clear()
                self._targets[url] = target
        return target

    def _address(self, target: Target) -> str:
        """A checked address of the target's host, looked up at most every `RESOLVE_TTL` s.

        A batch of events to one endpoint then costs one lookup, not one each;
        every request still goes to an address that passed the checks.
        """
        key = (target.host, target.port)
        now = time.monotonic()
        with self._lock:
            cached = self._resolved.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        raw = resolve_within(self.resolver, target.host, target.port, self.timeout)
        address = self.rules.check_addresses(target, raw)[0]
        with self._lock:
            self._resolved[key] = (address, now + RESOLVE_TTL)
        return address

    def _connection(self, endpoint_id: str, target: Target, address: str) -> _Connection:
        """The endpoint's connection to `address`; a new one (the old closed) when that changed."""
        key = (target.scheme, address, target.port, target.host)
        with self._lock:
            found = self._connections.get(endpoint_id)
            if found is not None and found.key == key:
                return found
            connection = _Connection(key, self._tls() if target.scheme == "https" else None)
            self._connections[endpoint_id] = connection
        if found is not None:
            found.close()
        return connection

    def _tls(self) -> ssl.SSLContext:
        """The TLS settings of every https endpoint: certificates checked, names checked."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self.ca_bundle or certifi.where())
        return self._ssl

    def _failed(self, error: str, started: float) -> Sent:
        ms = int((time.monotonic() - started) * 1000)
        return Sent(False, error=error, unreachable=True, duration_ms=ms)

    def close(self) -> None:
        """Close every keep-alive connection."""
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.close()


def _request(path: str, host: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """The HTTP/1.1 request head and body as one buffer (one send, one packet)."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"User-Agent: {USER_AGENT}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    for line in lines:
        if "\r" in line or "\n" in line or not line.isascii():
            raise ValueError("the endpoint URL or a header holds a line break or non-ASCII text")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


class SqsSender:
    """Sends bodies to `sqs://<queue name>` with the `webhook-*` values as message attributes.

    boto3 reads the usual AWS configuration, AWS_ENDPOINT_URL included; the
    endpoint it names is trusted as configured (no SSRF check).
    """

    def __init__(self) -> None:
        self._client: Any = None
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def _sqs(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=TIMEOUT, read_timeout=TIMEOUT, retries={"max_attempts": 1}
                )
                self._client = boto3.client("sqs", config=config)
            return self._client

    def _queue_url(self, name: str) -> str:
        queue = self._urls.get(name)
        if queue is None:
            queue = str(self._sqs().get_queue_url(QueueName=name)["QueueUrl"])
            self._urls[name] = queue
        return queue

    def check(self, name: str) -> None:
        """Raise ValueError naming the fix unless queue `name` exists and can be looked up."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._queue_url(name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
                raise ValueError(
                    f"SQS queue {name!r} does not exist in this account and region: create it "
                    f"(aws sqs create-queue --queue-name {name}) or check AWS_DEFAULT_REGION"
                ) from None
            raise ValueError(f"SQS refused to look up queue {name!r}: {code}") from None
        except BotoCoreError as exc:
            raise ValueError(
                f"SQS could not be asked about queue {name!r} ({exc}): check the AWS "
                "credentials, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL"
            ) from None

    def send(self, endpoint_id: str, url: str, body: bytes, headers: Mapping[str, str]) -> Sent:
        """Send one message; never raises."""
        from botocore.exceptions import BotoCoreError, ClientError

        started = time.monotonic()
        name = url[len("sqs://") :].strip("/")
        try:
            client = self._sqs()
            queue = self._queue_url(name)
            answer = client.send_message(
                QueueUrl=queue,
                MessageBody=body.decode(),
                MessageAttributes={
                    key: {"DataType": "String", "StringValue": value}
                    for key, value in headers.items()
                },
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            ms = int((time.monotonic() - started) * 1000)
            return Sent(False, error=f"SQS {code}: {exc}"[:500], unreachable=True, duration_ms=ms)
        except BotoCoreError as exc:
            ms = int((time.monotonic() - started) * 1000)
            return Sent(False, error=f"SQS: {exc}"[:500], unreachable=True, duration_ms=ms)
        ms = int((time.monotonic() - started) * 1000)
        return Sent(True, status=200, response=str(answer.get("MessageId", "")), duration_ms=ms)

    def close(self) -> None:
        """Nothing to release (boto3 pools close with the process)."""


class Senders:
    """Chooses the sender of an endpoint URL by its scheme."""

    def __init__(self, http: HttpSender, sqs: SqsSender) -> None:
        self.http = http
        self.sqs = sqs

    def send(self, endpoint_id: str, url: str, body: bytes, headers: Mapping[str, str]) -> Sent:
        """Deliver one signed body to `url`."""
        if url.startswith("sqs://"):
            return self.sqs.send(endpoint_id, url, body, headers)
        return self.http.send(endpoint_id, url, body, headers)

    def check(self, url: str) -> None:
        """Raise ValueError naming the problem unless events may go to `url`."""
        if url.startswith("sqs://"):
            name = url[len("sqs://") :].strip("/")
            if not name:
                raise ValueError("sqs:// needs a queue name: sqs://<queue name>")
            self.sqs.check(name)
            return
        if not url.startswith(("http://", "https://")):
            raise ValueError("an endpoint URL is http(s)://… or sqs://<queue name>")
        try:
            self.http.check(url)
        except FetchError as exc:
            raise ValueError(str(exc)) from None

    def close(self) -> None:
        """Release connections."""
        self.http.close()
        self.sqs.close()


def _cause(exc: BaseException) -> str:
    text = str(exc)
    if "SSL" in type(exc).__name__ or "certificate" in text.lower():
        # Which check failed (name, expiry, issuer) is what the operator needs.
        return f"TLS: {text[:300]}"
    for marker in ("Connection reset", "Connection refused", "Remote end closed", "timed out"):
        if marker in text:
            return marker
    return type(exc).__name__
