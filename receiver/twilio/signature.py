"""Compute and verify Twilio's `X-Twilio-Signature` (form, GET and JSON `bodySHA256` webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from receiver.errors import ConfigError, SignatureError

SIGNATURE_HEADER = "X-Twilio-Signature"
BODY_HASH_PARAM = "bodySHA256"

_DEFAULT_PORTS = {"https": "443", "http": "80"}


class HeaderItems(Protocol):
    """Request headers: a `Mapping[str, str]` or werkzeug's `Headers` both fit."""

    def items(self) -> Iterable[tuple[str, str]]:
        """Every (name, value) header pair."""
        ...


def compute_signature(token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """Twilio's HMAC-SHA1 signature (base64) of `url` followed by the sorted parameters."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    # Same canonical form as twilio-python's RequestValidator: unique names in code-point
    # order, then each name's unique values in code-point order, all without delimiters.
    parts = [url]
    for name in sorted(values):
        parts.extend(name + value for value in sorted(values[name]))
    # surrogatepass keeps this total: such text can never match a real signature anyway.
    message = "".join(parts).encode("utf-8", "surrogatepass")
    mac = hmac.new(token.encode("utf-8", "surrogatepass"), message, hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def body_sha256(body: bytes) -> str:
    """Lower-case hex SHA-256 of a raw request body, as Twilio puts in `bodySHA256`."""
    return hashlib.sha256(body).hexdigest()


class SignatureVerifier:
    """Checks `X-Twilio-Signature` against every configured Auth Token (primary, rotation)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if isinstance(tokens, str):
            raise TypeError("tokens must be a sequence of Auth Tokens, not one string")
        self._tokens = tuple(t for t in tokens if t)
        if not self._tokens:
            raise ConfigError("TWILIO_AUTH_TOKEN is empty; webhook signatures cannot be verified")

    def __repr__(self) -> str:
        return f"SignatureVerifier(<{len(self._tokens)} token(s)>)"

    def verify(
        self,
        url: str,
        params: Iterable[tuple[str, str]] | None,
        signature: str | None,
        *,
        body: bytes | None = None,
    ) -> str:
        """Return the candidate URL whose signature matched, or raise SignatureError."""
        if not signature:
            raise SignatureError(f"missing {SIGNATURE_HEADER} header for {_strip_fragment(url)}")
        url = _strip_fragment(url)
        body_hash = _query_body_hash(url)
        pairs: tuple[tuple[str, str], ...]
        if body_hash is not None:
            # JSON webhooks: Twilio signs the URL alone and vouches for the body through
            # bodySHA256, so without the body nothing at all would be authenticated.
            if body is None:
                raise SignatureError(f"{url} carries {BODY_HASH_PARAM} but no body was given")
            if not _equal(body_sha256(body), body_hash):
                raise SignatureError(f"body does not match {BODY_HASH_PARAM} in {url}")
            pairs = ()
        else:
            pairs = tuple(params or ())
            if body and not pairs:
                # A raw (non-form) body that no bodySHA256 covers would be unauthenticated.
                raise SignatureError(f"{url} has no {BODY_HASH_PARAM} to cover the request body")

        candidates = candidate_urls(url)
        matched: str | None = None
        # No early exit: every token and candidate is tried so timing reveals nothing.
        for token in self._tokens:
            for candidate in candidates:
                if _equal(compute_signature(token, candidate, pairs), signature) and not matched:
                    matched = candidate
        if matched is None:
            checked = " and ".join(candidates)
            raise SignatureError(
                f"{SIGNATURE_HEADER} does not match {checked}; check that RECEIVER_PUBLIC_URL "
                "(or the proxy headers) give the exact URL configured at Twilio"
            )
        return matched


def candidate_urls(url: str) -> tuple[str, ...]:
    """The URLs Twilio may have signed: as given, plus with the default port added or removed."""
    url = _strip_fragment(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return (url,)
    end = len(rest)
    for stop in "/?":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hostport = netloc.rpartition("@")
    host, colon, port = hostport.rpartition(":")
    # Only ":digits" after the host is a port; IPv6 brackets and an empty port are not.
    has_port = bool(colon) and port.isascii() and port.isdigit()
    prefix = f"{scheme}://{userinfo}{at}"
    if has_port:
        return (url, f"{prefix}{host}{tail}")
    default = _DEFAULT_PORTS.get(scheme.lower(), "80")
    return (url, f"{prefix}{hostport}:{default}{tail}")


def rebuild_url(
    *,
    public_url: str,
    proxy_hops: int,
    scheme: str,
    host: str,
    raw_path: str,
    query: str,
    headers: HeaderItems,
) -> str:
    """The URL Twilio signed, from the public URL, trusted proxy headers or the request itself."""
    suffix = raw_path + (f"?{query}" if query else "")
    if public_url:
        return _strip_fragment(public_url.rstrip("/") + suffix)
    prefix = ""
    if proxy_hops > 0:
        lowered: dict[str, str] = {}
        for name, value in headers.items():
            key = name.lower()
            lowered[key] = f"{lowered[key]},{value}" if key in lowered else value

        def trusted(name: str) -> str | None:
            return _trusted_value(lowered.get(name), proxy_hops)

        scheme = trusted("x-forwarded-proto") or scheme
        host = trusted("x-forwarded-host") or host
        port = trusted("x-forwarded-port")
        if port:
            # Same rule as werkzeug's ProxyFix: an unbracketed colon ends the host name.
            if ":" in host and not host.endswith("]"):
                host = host.rsplit(":", 1)[0]
            host = f"{host}:{port}"
        prefix = (trusted("x-forwarded-prefix") or "").rstrip("/")
    return _strip_fragment(f"{scheme}://{host}{prefix}{suffix}")


def _trusted_value(value: str | None, hops: int) -> str | None:
    """The value the `hops`-th proxy from us appended; earlier values are client-controlled."""
    if not value:
        return None
    values = [v.strip() for v in value.split(",")]
    if len(values) < hops:
        return None
    return values[-hops] or None


def _strip_fragment(url: str) -> str:
    return url.split("#", 1)[0]


def _query_body_hash(url: str) -> str | None:
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    # parse_qs, like twilio-python: a blank bodySHA256 counts as absent, the first value wins.
    values = parse_qs(query).get(BODY_HASH_PARAM)
    return values[0] if values else None


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )
