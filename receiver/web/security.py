"""Response headers every answer carries, and CSRF protection of state-changing forms."""

from __future__ import annotations

import hmac
import logging
import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, request, session

from receiver.web.auth import bearer_ok

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: Requests that prove themselves otherwise: Twilio signs its hooks, /m/ links are HMAC-signed.
CSRF_EXEMPT_PREFIXES = ("/twilio/", "/m/")


def csrf_token() -> str:
    """The session's CSRF token, created on first use (for forms and fetch headers)."""
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def rotate_csrf() -> None:
    """A fresh token (at login, so a token planted before login is worthless)."""
    session["csrf"] = secrets.token_urlsafe(32)


def _csrf_check() -> None:
    """Refuse a state-changing browser request without the session's CSRF token."""
    if request.method in SAFE_METHODS or request.path.startswith(CSRF_EXEMPT_PREFIXES):
        return
    if request.url_rule is None:
        return  # 404/405 answers change nothing
    if bearer_ok():
        return  # a browser never sends the bearer token on its own: nothing to forge
    expected = session.get("csrf")
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not sent or not hmac.compare_digest(sent, expected):
        log.warning("refused %s %s: missing or wrong CSRF token", request.method, request.path)
        abort(
            400,
            description="the form's CSRF token is missing or expired; "
            "reload the page and try again",
        )


def content_security_policy(extra_origin: str | None = None) -> str:
    """The policy of every response; `extra_origin` is the store's, for presigned redirects."""
    media = "'self'" + (f" {extra_origin}" if extra_origin else "")
    return (
        "default-src 'none'; "
        f"img-src {media}; "
        f"media-src {media}; "
        "style-src 'self'; "
        # The live pages' one script file and its event stream (GET /api/stream).
        "script-src 'self'; "
        "connect-src 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'; "
        "base-uri 'none'"
    )


def storage_origin(app: Flask) -> str | None:
    """The origin presigned URLs point at (S3, MinIO...), or None for local storage."""
    cache = app.extensions.setdefault("receiver_security", {})
    if "origin" not in cache:
        origin = None
        try:
            url = app.extensions["receiver"].store.presigned_url(
                "media/csp-origin-probe", expires=60
            )
        except Exception as exc:  # the policy must never break a response
            log.warning("cannot work out the storage origin for the CSP: %s", exc)
            url = None
        if url:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.netloc:
                origin = f"{parts.scheme}://{parts.netloc}"
        cache["origin"] = origin
    value: str | None = cache["origin"]
    return value


def page_policy() -> str:
    """The Content-Security-Policy of the running app's pages."""
    policy: str = current_app.extensions["receiver_security"]["csp"]
    return policy


def script_policy() -> str:
    """The page policy plus this site's own scripts and requests (the inbox reply box)."""
    return page_policy() + "; script-src 'self'; connect-src 'self'"


def file_policy() -> str:
    """The page policy plus `sandbox`: a stored file opened on its own can run nothing."""
    return page_policy() + "; sandbox"


def _relative_location(resp: Response) -> None:
    """No redirect takes its host from the request: an absolute Location naming the
    request's own Host (Werkzeug's slash-merging and strict-slash redirects build one
    from it) becomes a path. Other hosts (presigned storage URLs) are ours to name."""
    location = resp.headers.get("Location")
    if not location:
        return
    try:
        parts = urlsplit(location)
    except ValueError:
        return
    if parts.netloc and parts.netloc.lower() == request.host.lower():
        path = "/" + parts.path.lstrip("/")  # never "//host": that is another host
        resp.headers["Location"] = path + (f"?{parts.query}" if parts.query else "")


def _headers(resp: Response) -> Response:
    """Strict defaults on every answer; a route may only make them stricter."""
    _relative_location(resp)
    resp.headers.setdefault("Content-Security-Policy", page_policy())
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.url_rule is not None and not request.path.startswith(("/twilio/", "/m/")):
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def install(app: Flask) -> None:
    """Security headers on every response, CSRF checks on state-changing requests."""
    app.extensions.setdefault("receiver_security", {})
    app.extensions["receiver_security"]["csp"] = content_security_policy(storage_origin(app))
    app.before_request(_csrf_check)
    app.after_request(_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
