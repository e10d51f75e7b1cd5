"""Streaming media downloader: size caps, retries, scoped credentials.

What a download guarantees, and which module keeps each promise, is in
docs/design.md ("Inbound pipeline and fetching"). Errors are `BlockedHost`,
`TooLarge` and `FetchError` from `receiver.errors`; their messages never
contain credentials or URL query strings (a presigned URL's query is a
bearer token).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TypeVar, cast
from urllib.parse import urljoin

import requests
from requests.auth import HTTPBasicAuth
from urllib3.exceptions import ConnectTimeoutError

from receiver.errors import BlockedHost, ConfigError, FetchError, TooLarge
from receiver.httpheaders import retry_after
from receiver.media.deadline import Deadline, deadline_scope
from receiver.media.hostrules import HostRules, Target, parse_rule, parse_url
from receiver.media.pinning import Resolver, pinned_session, resolve_within, system_resolver

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

HEAD_BYTES = 8192
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Statuses worth asking again: Twilio media can 404 for a moment after the
# webhook, and 408/425/429/5xx are the server saying "not now".
_RETRY_STATUSES = frozenset({404, 408, 425, 429})
_SID = re.compile(r"[A-Za-z0-9]{2,64}")

T = TypeVar("T")


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
            parse_rule(entry)
        if self.require_allowlisted and not self.allowed_hosts:
            raise ConfigError(
                "FetchConfig.allowed_hosts is empty while require_allowlisted=True, so no "
                "URL could be fetched; list the media hosts (RECEIVER_MEDIA_HOSTS)"
            )
        try:
            api = parse_url(self.api_base)
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
    def inbound(cls, settings: Settings) -> FetchConfig:
        """How inbound MediaUrls are fetched: allowlisted hosts, Twilio's media
        credentials for this account, and RECEIVER_FETCH_DEADLINE."""
        return cls(
            allowed_hosts=settings.media_hosts,
            require_allowlisted=True,
            api_base=settings.api_base,
            credentials=settings.rest_credentials,
            account_sid=settings.account_sid or None,
            deadline=settings.fetch_deadline,
        )

    @classmethod
    def outbound(cls, settings: Settings) -> FetchConfig:
        """How user-supplied media URLs are fetched: any public host, never credentials.

        RECEIVER_MEDIA_HOSTS entries with a port may still be private (local
        media hosts, tests). A person is waiting for the answer, so there is
        one quick retry for a flaky host, not the inbound backoff.
        """
        return cls(
            allowed_hosts=settings.media_hosts,
            require_allowlisted=False,
            api_base=settings.api_base,
            attempts=2,
            backoff=0.25,
        )

    def allowing(self, *entries: str) -> FetchConfig:
        """This configuration with more `allowed_hosts` entries (validated the same way)."""
        return replace(self, allowed_hosts=(*self.allowed_hosts, *entries))


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
        self._hosts = HostRules(
            config.allowed_hosts, require_allowlisted=config.require_allowlisted
        )
        api = parse_url(config.api_base)
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
        first = self._hosts.first(url)
        # Not a `with` block: on success the file is handed to the caller.
        spool = tempfile.SpooledTemporaryFile(max_size=self.config.spool_bytes)  # noqa: SIM115
        try:
            with deadline_scope(self.config.deadline) as deadline:
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
        first = self._hosts.first(url)
        with deadline_scope(self.config.deadline) as deadline:
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
        first: Target,
        spool: Any,
        max_bytes: int,
        budget: ByteBudget | None,
        deadline: Deadline,
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
        deadline: Deadline,
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

    def _head_once(self, first: Target, deadline: Deadline) -> HeadResult:
        with self._follow(first, "HEAD", deadline) as hop:
            return HeadResult(
                status=hop.response.status_code,
                headers={k.lower(): v for k, v in hop.response.headers.items()},
                final_url=hop.target.url,
                redirects=hop.redirects,
            )

    @contextlib.contextmanager
    def _follow(self, first: Target, method: str, deadline: Deadline) -> Iterator[_Hop]:
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
            following = parse_url(urljoin(target.url, location))
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
        target: Target,
        method: str,
        deadline: Deadline,
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

    def _retrying(self, deadline: Deadline, attempt: Callable[[], T]) -> T:
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

    def _timeouts(self, deadline: Deadline, target: Target) -> tuple[float, float]:
        remaining = deadline.remaining()
        if remaining <= 0:
            self._raise_deadline(target, "connecting")
        return (
            min(self.config.connect_timeout, remaining),
            min(self.config.read_timeout, remaining),
        )

    def _raise_deadline(self, target: Target, stage: str) -> NoReturn:
        raise FetchError(
            f"{target.safe}: gave up {stage} at the {self.config.deadline:g}s download deadline",
            retryable=True,
        )

    # -- hosts, addresses, credentials ----------------------------------

    def _checked_addresses(self, target: Target, deadline: Deadline) -> list[str]:
        """Resolve once and check every address; the caller connects only to these."""
        if target.is_ip:
            raw = [target.host]
        else:
            limit = min(self.config.connect_timeout, deadline.remaining())
            if limit <= 0:
                self._raise_deadline(target, "resolving the host")
            raw = resolve_within(self._resolver, target.host, target.port, limit)
        if not raw:
            raise FetchError(f"{target.host} has no addresses", retryable=True)
        return self._hosts.check_addresses(target, raw)

    def _auth_for(self, target: Target) -> HTTPBasicAuth | None:
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
            return FetchError(f"{where} answered HTTP {status}: {hint}", status=status)
        if status in _RETRY_STATUSES or status >= 500:
            error = FetchError(f"{where} answered HTTP {status}", retryable=True)
            # Only the delta-seconds form: a media CDN's date is left to our own backoff.
            wait = retry_after(hop.response.headers.get("Retry-After"), dates=False)
            return _RetryLater(error, wait)
        return FetchError(f"{where} answered HTTP {status}", retryable=False)

    def _network_error(
        self, exc: BaseException, target: Target, deadline: Deadline, stage: str
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
            session = pinned_session(self.config.user_agent, self.config.ca_bundle)
            state.session = session
            state.pid = os.getpid()
            with self._sessions_lock:
                self._sessions.append(session)
        return cast(requests.Session, state.session)


# ---------------------------------------------------------------------------
# Hops and retries


@dataclass(frozen=True)
class _Hop:
    response: requests.Response
    target: Target
    redirects: int
    sent_credentials: bool


class _RetryLater(Exception):
    """An HTTP status worth another attempt, with the server's Retry-After if any."""

    def __init__(self, error: FetchError, after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.after = after


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
    target: Target, declared: int, max_bytes: int, budget: ByteBudget | None
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
