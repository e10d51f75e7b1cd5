"""Who may call a route: the API bearer token or a logged-in browser session.

Access is denied by default: `install` puts one gate in front of every route,
so a route added later is protected without anyone remembering to. Only the
Twilio hooks (they carry a signature), the health and metrics routes, the
signed `/m/<token>` links, the login form and its stylesheet are public.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import urlencode, urlsplit

from flask import Flask, current_app, g, jsonify, redirect, request, session
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import Unauthorized

from receiver.index.sessions import SessionStore, credential_fingerprint
from receiver.index.throttle import AuthThrottle

P = ParamSpec("P")
R = TypeVar("R")

#: Route rules reachable without credentials (exact rule strings).
PUBLIC_RULES = frozenset({"/healthz", "/readyz", "/metrics", "/login", "/static/app.css"})
#: Route rules reachable without credentials (rule prefixes): signed by Twilio or by us.
PUBLIC_PREFIXES = ("/twilio/", "/m/")
#: How long a browser login lasts at most, whatever the cookie or the index says.
SESSION_MAX_AGE = 12 * 3600
#: The throttle's account names: the browser login and the API token.
LOGIN_ACCOUNT = "admin"
API_ACCOUNT = "api"


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
    """Whether the browser session is logged in: a live record in the index, not just a cookie."""
    cached = g.get("receiver_session_ok")
    if cached is None:
        cached = g.receiver_session_ok = _session_live()
    return bool(cached)


def _session_live() -> bool:
    if session.get("user") != "admin":
        return False
    started = session.get("login_at")
    if not (isinstance(started, int | float) and 0 <= time.time() - started < SESSION_MAX_AGE):
        return False
    session_id = session.get("sid")
    if not isinstance(session_id, str):
        return False
    record = sessions().check(session_id, _credential())
    return record is not None and record.username == "admin"


def _credential() -> str:
    """The fingerprint of the admin password now configured (a change ends older sessions)."""
    settings = current_app.extensions["receiver"].settings
    return credential_fingerprint(settings.secret_key, settings.admin_password)


def operator() -> str:
    """Who is looking: the session's account ("admin" today; named operators later)."""
    user = session.get("user")
    return user if isinstance(user, str) and user else LOGIN_ACCOUNT


def start_session() -> None:
    """Log the browser in with a fresh session id (never one planted before login)."""
    old = session.get("sid")
    store = sessions()
    if isinstance(old, str):
        store.end(old)
    session.clear()
    session["sid"] = store.open("admin", _credential())
    session["user"] = "admin"
    session["login_at"] = int(time.time())
    g.receiver_session_ok = True


def end_session() -> None:
    """Log out: the record goes, so a copy of the cookie opens nothing anywhere."""
    session_id = session.get("sid")
    if isinstance(session_id, str):
        sessions().end(session_id)
    session.clear()
    g.receiver_session_ok = False


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
    if rule is None or is_public(rule.rule):
        return None  # unknown routes fall through to the 404/405 answer
    if bearer_presented():
        refused = _bearer_throttled()
        if refused is not None:
            return refused
    if authorized():
        return None
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


def _bearer_throttled() -> ResponseReturnValue | None:
    """429 for an address past its token failures; a wrong token counts as one failure."""
    client = client_ip()
    limiter = throttle()
    wait = limiter.retry_after(client, API_ACCOUNT)
    if not wait:
        if bearer_ok():
            return None
        limiter.failed(client, API_ACCOUNT)
        return None  # the gate answers 401
    resp = jsonify(
        error="too_many_requests",
        message=f"too many wrong API tokens from this address; retry in {wait} seconds",
    )
    resp.headers["Retry-After"] = str(wait)
    return resp, 429


def install(app: Flask) -> None:
    """Put the authentication gate in front of every route of `app`."""
    app.before_request(_gate)


def sessions() -> SessionStore:
    """The browser sessions of the running app."""
    store: SessionStore = current_app.extensions["receiver"].sessions
    return store


def throttle() -> AuthThrottle:
    """The shared login and API-token failure limiter of the running app."""
    limiter: AuthThrottle = current_app.extensions["receiver"].throttle
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
