"""Who may call a route: the API bearer token or a logged-in browser session.

Access is denied by default: `install` puts one gate in front of every route,
so a route added later is protected without anyone remembering to. Only the
Twilio hooks (they carry a signature), the health and metrics routes, the
signed `/m/<token>` links, the login form and its stylesheet are public.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import urlencode, urlsplit

from flask import Flask, current_app, jsonify, redirect, request, session
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import Unauthorized

P = ParamSpec("P")
R = TypeVar("R")

#: Route rules reachable without credentials (exact rule strings).
PUBLIC_RULES = frozenset({"/healthz", "/readyz", "/metrics", "/login", "/static/app.css"})
#: Route rules reachable without credentials (rule prefixes): signed by Twilio or by us.
PUBLIC_PREFIXES = ("/twilio/", "/m/")
#: How long a browser login lasts, whatever the cookie says.
SESSION_MAX_AGE = 12 * 3600
LOGIN_FAILURES = 5
LOGIN_WINDOW = 60.0


def bearer_presented() -> bool:
    """Whether the request carries an Authorization header at all."""
    return bool(request.headers.get("Authorization"))


def bearer_ok() -> bool:
    """Whether the request carries `Authorization: Bearer <RECEIVER_API_TOKEN>`."""
    token = current_app.extensions["receiver"].settings.api_token
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value or not token:
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def session_ok() -> bool:
    """Whether the browser session is logged in (and the login is recent enough)."""
    if session.get("user") != "admin":
        return False
    started = session.get("login_at")
    return isinstance(started, int | float) and 0 <= time.time() - started < SESSION_MAX_AGE


def authorized() -> bool:
    """A valid bearer token, or (with no Authorization header) a logged-in session."""
    if bearer_presented():
        return bearer_ok()
    return session_ok()


def password_ok(candidate: str) -> bool:
    """Constant-time check of the admin password; never true when none is configured."""
    expected = current_app.extensions["receiver"].settings.admin_password
    if not expected or not candidate:
        return False
    return hmac.compare_digest(candidate.encode(), expected.encode())


def is_public(rule: str) -> bool:
    """Whether a route rule is reachable without credentials."""
    return rule in PUBLIC_RULES or rule.startswith(PUBLIC_PREFIXES)


def safe_next(raw: str | None, default: str = "/messages") -> str:
    """`raw` if it is a path on this site (not `//host`, not `https://...`), else `default`."""
    if not raw or len(raw) > 2000 or not raw.startswith("/") or raw.startswith(("//", "/\\")):
        return default
    if any(ch in raw for ch in "\\\r\n\t") or not raw.isprintable():
        return default
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return default
    return raw


def login_url(next_path: str | None = None) -> str:
    """The login page, remembering where to go afterwards."""
    target = safe_next(next_path, default="")
    return "/login" + (f"?{urlencode({'next': target})}" if target else "")


def api_auth(fn: Callable[P, R]) -> Callable[P, R]:
    """Require the API token (or a logged-in browser session) for a JSON route."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not authorized():
            raise Unauthorized("send Authorization: Bearer $RECEIVER_API_TOKEN")
        return fn(*args, **kwargs)

    return wrapper


def _gate() -> ResponseReturnValue | None:
    """Deny every route that is not public unless the caller is authenticated."""
    rule = request.url_rule
    if rule is None or is_public(rule.rule) or authorized():
        return None  # unknown routes fall through to the 404/405 answer
    if request.path.startswith("/api/"):
        message = (
            "the API token is wrong; use RECEIVER_API_TOKEN"
            if bearer_presented()
            else "authentication required: send Authorization: Bearer $RECEIVER_API_TOKEN"
        )
        resp = jsonify(error="unauthorized", message=message)
        resp.headers["WWW-Authenticate"] = 'Bearer realm="mms-receiver"'
        return resp, 401
    full = request.full_path if request.query_string else request.path
    target = full if request.method in ("GET", "HEAD") else None
    return redirect(login_url(target), code=303 if request.method == "POST" else 302)


def install(app: Flask) -> None:
    """Put the authentication gate in front of every route of `app`."""
    app.extensions["receiver_login_limiter"] = LoginLimiter()
    app.before_request(_gate)


def login_limiter() -> LoginLimiter:
    """The login rate limiter of the running app."""
    limiter: LoginLimiter = current_app.extensions["receiver_login_limiter"]
    return limiter


def client_ip() -> str:
    """The caller's address, trusting exactly RECEIVER_PROXY_HOPS proxies' X-Forwarded-For."""
    hops = current_app.extensions["receiver"].settings.proxy_hops
    if hops:
        chain = [
            a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()
        ]
        if len(chain) >= hops:
            return chain[-hops]
    return request.remote_addr or "unknown"


class LoginLimiter:
    """In-process sliding window of failed logins per client address."""

    def __init__(
        self,
        failures: int = LOGIN_FAILURES,
        window: float = LOGIN_WINDOW,
        max_clients: int = 10_000,
    ) -> None:
        self.failures = failures
        self.window = window
        self.max_clients = max_clients
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Seconds until `client` may try again (0: it may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._prune(client, now)
            if len(times) < self.failures:
                return 0
            return max(1, int(times[0] + self.window - now + 0.999))

    def failed(self, client: str, now: float | None = None) -> None:
        """Record one failed attempt."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if client not in self._seen and len(self._seen) >= self.max_clients:
                # Forget the client whose last failure is oldest; memory stays bounded.
                oldest = min(self._seen, key=lambda c: self._seen[c][-1] if self._seen[c] else 0.0)
                del self._seen[oldest]
            self._seen.setdefault(client, deque()).append(now)

    def succeeded(self, client: str) -> None:
        """Forget the failures of a client that logged in."""
        with self._lock:
            self._seen.pop(client, None)

    def _prune(self, client: str, now: float) -> deque[float]:
        times = self._seen.get(client, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            self._seen.pop(client, None)
        return times
