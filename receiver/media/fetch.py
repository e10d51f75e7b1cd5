"""Streaming media downloader: size caps, a deadline, redirects and SSRF rules, scoped credentials.

What every download guarantees:

* The body is streamed chunk by chunk into a spooled temporary file while it is
  hashed, and the per-file cap and the per-message `ByteBudget` are enforced on
  the bytes actually received: a lying or missing Content-Length changes nothing.
* One deadline covers the whole download (DNS, connects, redirects, retries and
  the body); a watchdog cuts the connection when it passes, so a server that
  trickles bytes cannot hold a worker.
* Redirects are followed here, not by requests. Every hop's host is resolved
  once, every address it resolves to is checked (`netguard`), and the request
  is sent to that checked address with the original Host header and the host
  name used for TLS SNI and certificate checks, so DNS cannot change between
  the check and the connection.
* Twilio credentials are sent only to media paths of the configured account on
  the exact `api_base` origin, and never again once a redirect has left it.

Errors are `BlockedHost`, `TooLarge` and `FetchError` from `receiver.errors`;
their messages never contain credentials or URL query strings (a presigned
URL's query is a bearer token).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import ipaddress
import itertools
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TypeVar, cast
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError

from receiver.errors import BlockedHost, ConfigError, FetchError, TooLarge
from receiver.media.netguard import blocked_reason, parse_address

if TYPE_CHECKING:
    from receiver.settings import Settings

__all__ = [
    "ByteBudget",
    "FetchConfig",
    "FetchResult",
    "Fetcher",
    "HeadResult",
    "Preflight",
    "Resolver",
    "system_resolver",
]

Resolver = Callable[[str, int], list[str]]
"""Maps (host name, port) to IP address strings; the default is `system_resolver`."""

HEAD_BYTES = 8192
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Statuses worth asking again: Twilio media can 404 for a moment after the
# webhook, and 408/425/429/5xx are the server saying "not now".
_RETRY_STATUSES = frozenset({404, 408, 425, 429})
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_SID = re.compile(r"[A-Za-z0-9]{2,64}")

T = TypeVar("T")


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve `host` with the operating system, returning unique addresses in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


# ---------------------------------------------------------------------------
# Configuration and values


@dataclass(frozen=True)
class FetchConfig:
    """How a `Fetcher` downloads: which hosts, which credentials, which limits.

    `allowed_hosts` entries are ``host`` (any port, public addresses only) or
    ``host:port`` (``[::1]:8080`` for IPv6). An entry with a port also lets
    exactly that host and port resolve to non-public addresses, for tests and
    internal media hosts. Validated on construction; a bad field raises
    `ConfigError` naming it.
    """

    allowed_hosts: tuple[str, ...]
    require_allowlisted: bool = True
    api_base: str = "https://api.twilio.com"
    credentials: tuple[str, str] | None = field(default=None, repr=False)
    account_sid: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 30.0
    max_redirects: int = 5
    attempts: int = 3
    backoff: float = 0.5
    chunk_size: int = 64 * 1024
    spool_bytes: int = 1024 * 1024
    user_agent: str = "mms-receiver/0.1"
    ca_bundle: str | None = None
    """A CA bundle file or directory for TLS (private CAs, tests); None: the default store."""

    def __post_init__(self) -> None:
        # Accept any iterable of entries but keep the frozen value a tuple.
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        for entry in self.allowed_hosts:
            _parse_rule(entry)
        if self.require_allowlisted and not self.allowed_hosts:
            raise ConfigError(
                "FetchConfig.allowed_hosts is empty while require_allowlisted=True, so no "
                "URL could be fetched; list the media hosts (RECEIVER_MEDIA_HOSTS)"
            )
        try:
            api = _parse_url(self.api_base)
        except BlockedHost as exc:
            raise ConfigError(f"FetchConfig.api_base: {exc}") from None
        if api.query:
            raise ConfigError("FetchConfig.api_base must not carry a query string")
        if self.credentials is not None and (
            len(self.credentials) != 2 or not all(self.credentials)
        ):
            raise ConfigError(
                "FetchConfig.credentials must be (API key SID, secret) or "
                "(Account SID, auth token), both non-empty"
            )
        if self.account_sid is not None and not _SID.fullmatch(self.account_sid):
            raise ConfigError("FetchConfig.account_sid must be an account SID such as AC0123…")
        for name in ("connect_timeout", "read_timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"FetchConfig.{name} must be a positive number of seconds")
        if self.backoff < 0:
            raise ConfigError("FetchConfig.backoff must be >= 0 seconds")
        if self.max_redirects < 0:
            raise ConfigError("FetchConfig.max_redirects must be >= 0")
        if self.attempts < 1:
            raise ConfigError("FetchConfig.attempts must be at least 1")
        if self.chunk_size < 1:
            raise ConfigError("FetchConfig.chunk_size must be at least 1 byte")
        if self.spool_bytes < 0:
            raise ConfigError("FetchConfig.spool_bytes must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings, *, outbound: bool = False) -> FetchConfig:
        """The inbound configuration (allowlisted media hosts, Twilio credentials), or
        with ``outbound=True`` the one for user-supplied media URLs (any public
        host, never credentials)."""
        if outbound:
            return cls(allowed_hosts=(), require_allowlisted=False, api_base=settings.api_base)
        return cls(
            allowed_hosts=settings.media_hosts,
            api_base=settings.api_base,
            credentials=settings.rest_credentials,
            account_sid=settings.account_sid or None,
        )


class ByteBudget:
    """A byte allowance shared by the concurrent downloads of one message (thread-safe)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("ByteBudget limit must be >= 0")
        self._limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Claim `n` bytes, or raise TooLarge(reason="message_too_large") and claim nothing."""
        with self._lock:
            if self._used + n > self._limit:
                raise TooLarge(
                    f"the message's media would exceed its {self._limit}-byte total",
                    reason="message_too_large",
                )
            self._used += n

    def release(self, n: int) -> None:
        """Give back bytes claimed by a download that failed."""
        with self._lock:
            self._used = max(0, self._used - n)

    @property
    def used(self) -> int:
        """Bytes currently claimed."""
        with self._lock:
            return self._used

    @property
    def limit(self) -> int:
        """The total this budget allows."""
        return self._limit

    @property
    def remaining(self) -> int:
        """Bytes still available."""
        with self._lock:
            return self._limit - self._used


@dataclass(frozen=True)
class FetchResult:
    """A completed download. The caller owns `file` and must close it."""

    file: BinaryIO
    size: int
    sha256: str
    head: bytes
    content_type: str | None
    final_url: str
    redirects: int
    elapsed: float

    def close(self) -> None:
        """Close (and so delete) the spooled file."""
        self.file.close()


@dataclass(frozen=True)
class HeadResult:
    """The answer to a HEAD request after redirects; any status is reported, not raised."""

    status: int
    headers: Mapping[str, str]
    """Response headers with lower-case names."""
    final_url: str
    redirects: int

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str | None:
        """The Content-Type header, if any."""
        return self.headers.get("content-type")

    @property
    def content_length(self) -> int | None:
        """The Content-Length header as a number, if present and valid."""
        return _int_or_none(self.headers.get("content-length"))


@dataclass(frozen=True)
class Preflight:
    """What a media host tells anyone who fetches a URL without credentials (HEAD, then GET)."""

    head: HeadResult
    result: FetchResult

    @property
    def problems(self) -> tuple[str, ...]:
        """Disagreements between HEAD and GET, or a missing Content-Type, as sentences."""
        found: list[str] = []
        if not self.head.ok:
            found.append(f"HEAD {self.head.final_url} answered HTTP {self.head.status}")
        got = _media_type(self.result.content_type)
        if got is None:
            found.append("the media URL sends no Content-Type; Twilio refuses such media (12300)")
        head_type = _media_type(self.head.content_type)
        if self.head.ok and head_type != got:
            found.append(f"HEAD says Content-Type {head_type} but GET says {got}")
        length = self.head.content_length
        if self.head.ok and length is not None and length != self.result.size:
            found.append(f"HEAD says {length} bytes but GET delivered {self.result.size}")
        return tuple(found)


# ---------------------------------------------------------------------------
# The fetcher


class Fetcher:
    """Downloads media URLs under one `FetchConfig`; safe to share between threads."""

    def __init__(self, config: FetchConfig, *, resolver: Resolver | None = None) -> None:
        self.config = config
        self._resolver = resolver or system_resolver
        self._rules = tuple(_parse_rule(entry) for entry in config.allowed_hosts)
        api = _parse_url(config.api_base)
        self._api_origin = api.origin
        self._media_path: re.Pattern[str] | None = None
        if config.credentials is not None and config.account_sid is not None:
            prefix = re.escape(api.path.rstrip("/"))
            self._media_path = re.compile(
                rf"{prefix}/2010-04-01/Accounts/{re.escape(config.account_sid)}"
                r"/Messages/[A-Za-z0-9]+/Media/[A-Za-z0-9]+"
            )
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    # -- public API -----------------------------------------------------

    def fetch(self, url: str, *, max_bytes: int, budget: ByteBudget | None = None) -> FetchResult:
        """Download `url` into a spooled temporary file positioned at 0.

        Raises BlockedHost, TooLarge (reason ``too_large`` or
        ``message_too_large``) or FetchError (reason ``fetch_failed``;
        `retryable` says whether trying again later may help).
        """
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        first = self._first_target(url)
        # Not a `with` block: on success the file is handed to the caller.
        spool = tempfile.SpooledTemporaryFile(max_size=self.config.spool_bytes)  # noqa: SIM115
        try:
            with self._deadline() as deadline:
                return self._retrying(
                    deadline,
                    lambda: self._get_once(first, spool, max_bytes, budget, deadline),
                )
        except BaseException:
            spool.close()
            raise

    def head(self, url: str) -> HeadResult:
        """HEAD `url` under the same host, redirect and credential rules as `fetch`.

        HTTP statuses are reported in the result; blocked hosts and network
        failures raise as in `fetch`.
        """
        first = self._first_target(url)
        with self._deadline() as deadline:
            return self._retrying(deadline, lambda: self._head_once(first, deadline))

    def head_and_get(
        self, url: str, *, max_bytes: int, budget: ByteBudget | None = None
    ) -> Preflight:
        """HEAD then GET `url`, as Twilio will before it sends the media.

        Use it with a Fetcher built without credentials (``require_allowlisted=False``
        for user URLs) so success also proves the URL needs no authentication.
        Check `Preflight.problems`, then compare `result.content_type` with the
        bytes (`inspect`) and `result.size` with the MMS limit.
        """
        head = self.head(url)
        return Preflight(head=head, result=self.fetch(url, max_bytes=max_bytes, budget=budget))

    def close(self) -> None:
        """Close every thread's requests.Session and its pooled connections."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one attempt ----------------------------------------------------

    def _get_once(
        self,
        first: _Target,
        spool: Any,
        max_bytes: int,
        budget: ByteBudget | None,
        deadline: _Deadline,
    ) -> FetchResult:
        spool.seek(0)
        spool.truncate()
        with self._follow(first, "GET", deadline) as hop:
            response = hop.response
            if not 200 <= response.status_code < 300 or response.status_code == 206:
                raise self._status_error(hop)
            declared = _declared_length(response.headers)
            if declared is not None:
                # An honest length over a cap fails before any body is read.
                _check_declared(hop.target, declared, max_bytes, budget)
            size, digest, head = self._stream(hop, spool, declared, max_bytes, budget, deadline)
            spool.seek(0)
            return FetchResult(
                file=cast(BinaryIO, spool),
                size=size,
                sha256=digest,
                head=head,
                content_type=response.headers.get("Content-Type"),
                final_url=hop.target.url,
                redirects=hop.redirects,
                elapsed=deadline.elapsed(),
            )

    def _stream(
        self,
        hop: _Hop,
        spool: Any,
        declared: int | None,
        max_bytes: int,
        budget: ByteBudget | None,
        deadline: _Deadline,
    ) -> tuple[int, str, bytes]:
        """Copy the body into `spool` under both caps; returns (size, sha256, head)."""
        hasher = hashlib.sha256()
        head = bytearray()
        size = 0
        taken = 0
        try:
            for chunk in hop.response.iter_content(chunk_size=self.config.chunk_size):
                if deadline.expired:
                    self._raise_deadline(hop.target, "reading the body")
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(
                        f"{hop.target.safe} sent more than the {max_bytes}-byte limit per file"
                    )
                if budget is not None:
                    budget.take(len(chunk))
                    taken += len(chunk)
                hasher.update(chunk)
                _write(spool, chunk)
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
            if declared is not None and size != declared:
                raise FetchError(
                    f"{hop.target.safe} ended after {size} of {declared} bytes", retryable=True
                )
        except requests.RequestException as exc:
            if budget is not None:
                budget.release(taken)
            raise self._network_error(exc, hop.target, deadline, "reading the body") from None
        except BaseException:
            if budget is not None:
                budget.release(taken)
            raise
        return size, hasher.hexdigest(), bytes(head)

    def _head_once(self, first: _Target, deadline: _Deadline) -> HeadResult:
        with self._follow(first, "HEAD", deadline) as hop:
            return HeadResult(
                status=hop.response.status_code,
                headers={k.lower(): v for k, v in hop.response.headers.items()},
                final_url=hop.target.url,
                redirects=hop.redirects,
            )

    @contextlib.contextmanager
    def _follow(self, first: _Target, method: str, deadline: _Deadline) -> Iterator[_Hop]:
        """Send `method` and follow redirects; yields the first non-redirect answer, open."""
        target = first
        seen = {first.url}
        redirects = 0
        # Credentials belong to the api_base origin: once any hop leaves it,
        # none are sent again, even if a later hop comes back.
        stayed_on_api = True
        while True:
            stayed_on_api = stayed_on_api and target.origin == self._api_origin
            auth = self._auth_for(target) if stayed_on_api else None
            response = self._send(target, method, deadline, auth)
            if response.status_code not in _REDIRECTS:
                break
            location = response.headers.get("Location", "").strip()
            response.close()
            if not location:
                raise FetchError(
                    f"{target.safe} answered HTTP {response.status_code} without a Location"
                )
            if redirects >= self.config.max_redirects:
                raise FetchError(
                    f"{first.safe} redirected more than {self.config.max_redirects} times"
                )
            following = _parse_url(urljoin(target.url, location))
            if following.url in seen:
                raise FetchError(f"{first.safe} redirects in a loop (via {following.safe})")
            seen.add(following.url)
            redirects += 1
            target = following
        try:
            yield _Hop(response, target, redirects, auth is not None)
        finally:
            response.close()

    def _send(
        self,
        target: _Target,
        method: str,
        deadline: _Deadline,
        auth: HTTPBasicAuth | None,
    ) -> requests.Response:
        """One HTTP request to one checked, pinned address of `target`."""
        addresses = self._checked_addresses(target, deadline)
        session = self._session()
        failure: requests.RequestException | None = None
        for address in addresses:
            try:
                return session.request(
                    method,
                    target.pinned_url(address),
                    headers={"Host": target.host_header},
                    auth=auth,
                    timeout=self._timeouts(deadline, target),
                    allow_redirects=False,
                    stream=True,
                )
            except requests.RequestException as exc:
                # Like a browser, try the host's next address when one cannot be
                # reached at all (an unroutable IPv6 address is common).
                if _is_connect_failure(exc) and not deadline.expired:
                    failure = exc
                    continue
                raise self._network_error(exc, target, deadline, "waiting for an answer") from None
        assert failure is not None
        raise self._network_error(failure, target, deadline, "connecting") from None

    # -- retries and deadline -------------------------------------------

    def _retrying(self, deadline: _Deadline, attempt: Callable[[], T]) -> T:
        for number in range(1, self.config.attempts + 1):
            wait: float | None = None
            try:
                return attempt()
            except _RetryLater as exc:
                error, wait = exc.error, exc.after
            except FetchError as exc:
                if not exc.retryable or isinstance(exc, BlockedHost | TooLarge):
                    raise
                error = exc
            delay = self.config.backoff * 2 ** (number - 1)
            if wait is not None:
                delay = max(delay, wait)
            if number == self.config.attempts or delay >= deadline.remaining():
                raise error
            time.sleep(delay)
        raise AssertionError("unreachable: attempts >= 1")

    @contextlib.contextmanager
    def _deadline(self) -> Iterator[_Deadline]:
        deadline = _Deadline(self.config.deadline)
        previous = getattr(_current, "deadline", None)
        _current.deadline = deadline
        try:
            yield deadline
        finally:
            _current.deadline = previous
            deadline.finish()

    def _timeouts(self, deadline: _Deadline, target: _Target) -> tuple[float, float]:
        remaining = deadline.remaining()
        if remaining <= 0:
            self._raise_deadline(target, "connecting")
        return (
            min(self.config.connect_timeout, remaining),
            min(self.config.read_timeout, remaining),
        )

    def _raise_deadline(self, target: _Target, stage: str) -> NoReturn:
        raise FetchError(
            f"{target.safe}: gave up {stage} at the {self.config.deadline:g}s download deadline",
            retryable=True,
        )

    # -- hosts, addresses, credentials ----------------------------------

    def _first_target(self, url: str) -> _Target:
        target = _parse_url(url)
        if self.config.require_allowlisted and not any(
            rule.host == target.host and rule.port in (None, target.port) for rule in self._rules
        ):
            raise BlockedHost(
                f"{target.host_port} is not an allowed media host; add it to "
                "RECEIVER_MEDIA_HOSTS if media really comes from there"
            )
        return target

    def _checked_addresses(self, target: _Target, deadline: _Deadline) -> list[str]:
        """Resolve once and check every address; the caller connects only to these."""
        raw = [target.host] if target.is_ip else self._resolve(target, deadline)
        if not raw:
            raise FetchError(f"{target.host} has no addresses", retryable=True)
        private_ok = any(
            rule.host == target.host and rule.port == target.port for rule in self._rules
        )
        addresses: list[str] = []
        for value in raw:
            try:
                ip = parse_address(value)
            except ValueError:
                raise BlockedHost(f"{target.host} resolved to {value!r}, not an address") from None
            reason = None if private_ok else blocked_reason(ip)
            if reason is not None:
                where = target.host if target.is_ip else f"{target.host} resolves to {ip}, which"
                raise BlockedHost(
                    f"{where} is a {reason} address; media is only fetched from public "
                    "addresses (list the exact host:port in RECEIVER_MEDIA_HOSTS to allow it)"
                )
            addresses.append(str(ip))
        return addresses

    def _resolve(self, target: _Target, deadline: _Deadline) -> list[str]:
        # getaddrinfo has no timeout of its own, so it runs in a separate thread
        # that is abandoned if it takes too long.
        limit = min(self.config.connect_timeout, deadline.remaining())
        if limit <= 0:
            self._raise_deadline(target, "resolving the host")
        box: list[list[str] | Exception] = []

        def run() -> None:
            try:
                box.append(list(self._resolver(target.host, target.port)))
            except Exception as exc:
                box.append(exc)

        worker = threading.Thread(target=run, name="mms-resolve", daemon=True)
        worker.start()
        worker.join(limit)
        if not box:
            raise FetchError(
                f"looking up {target.host} took longer than {limit:.1f}s", retryable=True
            )
        outcome = box[0]
        if isinstance(outcome, Exception):
            cause = getattr(outcome, "strerror", None) or type(outcome).__name__
            raise FetchError(f"cannot resolve {target.host} ({cause})", retryable=True)
        return outcome

    def _auth_for(self, target: _Target) -> HTTPBasicAuth | None:
        if self._media_path is None or self.config.credentials is None:
            return None
        if target.origin != self._api_origin or not self._media_path.fullmatch(target.path):
            return None
        return HTTPBasicAuth(*self.config.credentials)

    # -- errors ---------------------------------------------------------

    def _status_error(self, hop: _Hop) -> FetchError | _RetryLater:
        status = hop.response.status_code
        where = hop.target.safe
        if status in (401, 403):
            if hop.sent_credentials:
                hint = (
                    "Twilio refused the credentials; check that the API key SID is paired "
                    "with its own secret (or the Account SID with its auth token)"
                )
            elif hop.target.origin == self._api_origin:
                hint = (
                    "no credentials were sent: set TWILIO_API_KEY/TWILIO_API_SECRET or "
                    "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN, and note they are only sent to "
                    "media URLs of TWILIO_ACCOUNT_SID"
                )
            else:
                hint = (
                    "the media host refused access (an expired or invalid signed link?); "
                    "credentials are never sent to it"
                )
            return FetchError(f"{where} answered HTTP {status}: {hint}", retryable=False)
        if status in _RETRY_STATUSES or status >= 500:
            error = FetchError(f"{where} answered HTTP {status}", retryable=True)
            return _RetryLater(error, _retry_after(hop.response.headers.get("Retry-After")))
        return FetchError(f"{where} answered HTTP {status}", retryable=False)

    def _network_error(
        self, exc: BaseException, target: _Target, deadline: _Deadline, stage: str
    ) -> FetchError:
        if deadline.expired:
            return FetchError(
                f"{target.safe}: gave up {stage} at the {self.config.deadline:g}s download "
                "deadline",
                retryable=True,
            )
        cause = _cause(exc)
        if isinstance(exc, requests.exceptions.SSLError):
            bad_cert = "CERTIFICATE_VERIFY_FAILED" in str(exc)
            why = "its certificate is not valid for that name" if bad_cert else cause
            # A certificate will not fix itself; a broken handshake might.
            return FetchError(f"TLS with {target.host_port} failed: {why}", retryable=not bad_cert)
        if _is_timeout(exc):
            return FetchError(f"{target.safe}: timed out {stage}", retryable=True)
        return FetchError(f"{target.safe}: connection failed {stage} ({cause})", retryable=True)

    # -- requests.Session per thread -----------------------------------

    def _session(self) -> requests.Session:
        # One Session per thread: requests' Session is not thread-safe. The pid
        # check drops a session inherited through fork, whose pooled sockets
        # the parent still uses.
        state = self._local
        if getattr(state, "pid", None) != os.getpid():
            session = requests.Session()
            # No proxies (they would resolve names themselves, defeating the
            # pinning) and no ~/.netrc credentials.
            session.trust_env = False
            # Media downloads need no cookies, and one host's cookie must not
            # follow us to another host that shares its address.
            session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            session.headers.update(
                {
                    "User-Agent": self.config.user_agent,
                    "Accept": "*/*",
                    # Media is stored byte-exact, so ask for the bytes as they are.
                    "Accept-Encoding": "identity",
                }
            )
            if self.config.ca_bundle:
                session.verify = self.config.ca_bundle
            adapter = _PinnedAdapter(pool_connections=8, pool_maxsize=2, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            state.session = session
            state.pid = os.getpid()
            with self._sessions_lock:
                self._sessions.append(session)
        return cast(requests.Session, state.session)


# ---------------------------------------------------------------------------
# URLs and host rules


@dataclass(frozen=True)
class _Target:
    """One parsed, validated hop URL."""

    url: str
    scheme: str
    host: str
    port: int
    is_ip: bool
    path: str
    query: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def safe(self) -> str:
        """The URL for messages: no query, which may hold a presigned signature."""
        return f"{self.scheme}://{self.host_header}{self.path}"

    def pinned_url(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return urlunsplit((self.scheme, f"{host}:{self.port}", self.path or "/", self.query, ""))


@dataclass(frozen=True)
class _Rule:
    host: str
    port: int | None


def _parse_url(url: str) -> _Target:
    """Validate a URL's scheme and host; raises BlockedHost with the reason."""
    text = url.strip()
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise BlockedHost("media URL contains control characters")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        got = f"{scheme}:" if scheme else "no scheme"
        raise BlockedHost(f"only http and https media URLs are fetched (got {got})")
    if "@" in parts.netloc:
        raise BlockedHost(
            "media URLs with user:password@ are refused; credentials come from configuration"
        )
    try:
        port = parts.port
    except ValueError:
        raise BlockedHost(f"media URL has an invalid port: {parts.netloc!r}") from None
    if not parts.hostname:
        raise BlockedHost("media URL has no host")
    try:
        host, is_ip = _normalize_host(parts.hostname)
    except ValueError as exc:
        raise BlockedHost(f"media URL host {parts.hostname!r} is refused: {exc}") from None
    clean = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    return _Target(
        url=clean,
        scheme=scheme,
        host=host,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        is_ip=is_ip,
        path=parts.path,
        query=parts.query,
    )


def _normalize_host(raw: str) -> tuple[str, bool]:
    """Lower-case ASCII host name or canonical IP text, and whether it is an IP."""
    text = raw.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text)), True
    except ValueError:
        pass
    if ":" in text:
        raise ValueError("not a valid IPv6 address")
    if text.endswith("."):
        text = text[:-1]
    try:
        ascii_host = text.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("not a valid host name") from None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("not a valid host name")
    last = labels[-1]
    if last.isdigit() or re.fullmatch(r"0x[0-9a-f]*", last):
        # "127.1", "2130706433" and "0x7f.1" all reach 127.0.0.1 through
        # inet_aton; a real name never ends in a numeric label.
        raise ValueError("looks like an IPv4 address in a non-standard form")
    return ascii_host, False


def _parse_rule(entry: str) -> _Rule:
    """Parse an allowed_hosts entry: host, host:port, [v6], [v6]:port or a bare IPv6 address."""
    text = entry.strip().lower()
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close == -1 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise ConfigError(f"FetchConfig.allowed_hosts: {entry!r} is not [IPv6]:port")
        host, port_text = text[1:close], text[close + 2 :]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        name, _ = _normalize_host(host)
        port = int(port_text) if port_text else None
    except ValueError:
        raise ConfigError(
            f"FetchConfig.allowed_hosts: {entry!r} is not host or host:port "
            "(e.g. api.twilio.com or 127.0.0.1:8123)"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"FetchConfig.allowed_hosts: {entry!r} has an invalid port")
    return _Rule(name, port)


# ---------------------------------------------------------------------------
# Transport: pinned connections and the deadline watchdog


@dataclass(frozen=True)
class _Hop:
    response: requests.Response
    target: _Target
    redirects: int
    sent_credentials: bool


class _RetryLater(Exception):
    """An HTTP status worth another attempt, with the server's Retry-After if any."""

    def __init__(self, error: FetchError, after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.after = after


_current = threading.local()


class _Deadline:
    """One download's time limit. When it passes, the sockets in use are shut down,
    which wakes a read blocked on a server that trickles bytes."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.at = self.start + seconds
        self._lock = threading.Lock()
        self._connections: set[HTTPConnection] = set()
        self._expired = False
        self._finished = False
        _WATCHDOG.schedule(self)

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def expired(self) -> bool:
        return self._expired or time.monotonic() >= self.at

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def watch(self, connection: HTTPConnection) -> None:
        with self._lock:
            if self._finished:
                return
            self._connections.add(connection)
            if self._expired:
                _shut(connection)

    def finish(self) -> None:
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
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._seq = itertools.count()
        self._running = False

    def schedule(self, deadline: _Deadline) -> None:
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


def _shut(connection: HTTPConnection) -> None:
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


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _watch(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _PinnedAdapter(HTTPAdapter):
    """Connects to the IP address in the URL; TLS uses the Host header's name.

    The fetcher puts the checked address in the URL, so the connection cannot
    go anywhere else; the pool key includes the TLS name, so a pooled
    connection is only reused for the same address and the same name. (With
    requests older than 2.32 the TLS name hook is not called and HTTPS fails
    certificate checks: it fails closed.)
    """

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[Any, Any]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        # requests types these as closed TypedDicts; urllib3 accepts more keys.
        params = cast(dict[str, Any], host_params)
        kwargs = cast(dict[str, Any], pool_kwargs)
        if params.get("scheme") == "https":
            name = _tls_name(request.headers.get("Host"))
            if name is not None:
                kwargs["server_hostname"] = name
        return params, kwargs


def _tls_name(host_header: str | bytes | None) -> str | None:
    """The host name in a Host header, or None for an IP address (no SNI for those)."""
    if not host_header:
        return None
    text = host_header.decode("ascii") if isinstance(host_header, bytes) else host_header
    if text.startswith("["):
        return None
    name = text.rsplit(":", 1)[0] if ":" in text else text
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None


# ---------------------------------------------------------------------------
# Small utilities


def _write(spool: Any, chunk: bytes) -> None:
    try:
        spool.write(chunk)
    except OSError as exc:
        raise FetchError(
            f"cannot write the download to a temporary file ({exc.strerror or exc}); "
            "check free space in the temp directory",
            retryable=True,
        ) from None


def _declared_length(headers: Mapping[str, str]) -> int | None:
    """The body length the headers promise, when it describes the bytes we will count."""
    if "Transfer-Encoding" in headers:
        # A chunked body ignores Content-Length (RFC 9112 6.3); a server that
        # sends both is lying about one of them.
        return None
    if headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        # The length is of the encoded bytes; the caps count decoded ones.
        return None
    return _int_or_none(headers.get("Content-Length"))


def _check_declared(
    target: _Target, declared: int, max_bytes: int, budget: ByteBudget | None
) -> None:
    if declared > max_bytes:
        raise TooLarge(
            f"{target.safe} is {declared} bytes, over the {max_bytes}-byte limit per file"
        )
    if budget is not None and declared > budget.remaining:
        raise TooLarge(
            f"{target.safe} is {declared} bytes, more than the {budget.remaining} bytes "
            f"left of the message's {budget.limit}-byte total",
            reason="message_too_large",
        )


def _int_or_none(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form; an HTTP date from a media CDN is rare
    # enough to fall back to our own backoff.
    seconds = _int_or_none(value)
    return float(seconds) if seconds is not None else None


def _media_type(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (args, reason, cause, context)."""
    pending = [exc]
    seen: set[int] = set()
    while pending:
        node = pending.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        inner = [a for a in node.args if isinstance(a, BaseException)]
        reason = getattr(node, "reason", None)
        if isinstance(reason, BaseException):
            inner.append(reason)
        for linked in (node.__cause__, node.__context__):
            if linked is not None:
                inner.append(linked)
        pending.extend(inner)


def _cause(exc: BaseException) -> str:
    for node in _chain(exc):
        if isinstance(node, OSError) and node.strerror:
            return node.strerror
    for node in _chain(exc):
        if type(node).__name__ == "IncompleteRead":
            return "the body ended early"
    return type(exc).__name__


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, requests.Timeout) or any(
        isinstance(node, TimeoutError | socket.timeout) or "Timeout" in type(node).__name__
        for node in _chain(exc)
    )


def _is_connect_failure(exc: requests.RequestException) -> bool:
    """Whether no connection was made at all (so another address may work)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    # urllib3's NewConnectionError subclasses ConnectTimeoutError.
    return isinstance(exc, requests.ConnectionError) and any(
        isinstance(node, ConnectTimeoutError) for node in _chain(exc)
    )
