"""Authentication: every route refuses anonymous and wrong-token callers; login, CSRF, limits."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from receiver.index.throttle import AuthThrottle
from receiver.web.auth import is_public, safe_next
from tests.conftest import ADMIN_PASSWORD, API_TOKEN, AUTH
from tests.web.conftest import PAGE_CSP, csrf_of, login
from tests.web.seed import Item, Seeder

#: Routes that need no credentials, and why: Twilio signs its hooks, load balancers and
#: Prometheus probe health and metrics, /m/<token> links are HMAC-signed, and the
#: login form (and its stylesheet) must be reachable to log in.
EXPECTED_PUBLIC = {
    "/twilio/messaging",
    "/twilio/status",
    "/twilio/conversations",
    "/twilio/events",
    "/healthz",
    "/readyz",
    "/metrics",
    "/login",
    "/static/app.css",
}
SAMPLE_VALUES = {
    "sid": "SM" + "0" * 32,
    "media_id": "1",
    "address": "+15550001111",
    "token": "abcdefgh12345678",
}


def routes(app: Any) -> list[tuple[str, str, str]]:
    """(rule, method, URL) for every route of the app, with sample path values."""
    adapter = app.url_map.bind("localhost")
    out = []
    for rule in app.url_map.iter_rules():
        values: dict[str, Any] = {}
        for name in rule.arguments:
            converter = rule._converters[name]
            sample = SAMPLE_VALUES.get(name, "x")
            numeric = type(converter).__name__ in ("IntegerConverter", "FloatConverter")
            values[name] = (int(sample) if sample.isdigit() else 1) if numeric else sample
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, method, adapter.build(rule.endpoint, values, method=method)))
    return out


# -- every route ---------------------------------------------------------------------


def test_public_routes_are_exactly_the_expected_ones(app: Any) -> None:
    public = {rule for rule, _, _ in routes(app) if is_public(rule)}
    assert public - EXPECTED_PUBLIC <= {r for r in public if r.startswith("/m/")}
    assert {"/twilio/messaging", "/twilio/status", "/healthz", "/readyz", "/login"} <= public


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {API_TOKEN}x"},
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Authorization": API_TOKEN},
        {"Authorization": "Bearer "},
        {"Cookie": "mmsr_session=forged"},
    ],
    ids=["none", "wrong", "longer", "basic", "no-scheme", "empty", "forged-cookie"],
)
def test_every_route_refuses_anonymous_and_wrong_credentials(
    app: Any, headers: dict[str, str]
) -> None:
    client = app.test_client()
    checked = 0
    for rule, method, url in routes(app):
        if is_public(rule):
            continue
        # One address per request: wrong tokens from one address are throttled (429),
        # which test_api_token_failures_are_throttled_per_address covers.
        address = f"10.77.{checked // 256}.{checked % 256}"
        resp = client.open(
            url, method=method, headers=headers, environ_base={"REMOTE_ADDR": address}
        )
        checked += 1
        if rule.startswith("/api/"):
            assert resp.status_code == 401, (method, url, resp.status_code)
            assert resp.get_json()["error"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        else:
            assert resp.status_code in (302, 303), (method, url, resp.status_code)
            location = urlsplit(resp.headers["Location"])
            assert location.path == "/login", (method, url)
            if method == "GET":
                assert parse_qs(location.query)["next"] == [url]
    assert checked >= 15


def test_api_token_failures_are_throttled_per_address(client: Any) -> None:
    wrong = {"Authorization": "Bearer wrong-token"}
    for _ in range(5):
        resp = client.get("/api/messages", headers=wrong, environ_base={"REMOTE_ADDR": "10.5.5.5"})
        assert resp.status_code == 401
    blocked = client.get("/api/messages", headers=AUTH, environ_base={"REMOTE_ADDR": "10.5.5.5"})
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    other = client.get("/api/messages", headers=AUTH, environ_base={"REMOTE_ADDR": "10.5.5.6"})
    assert other.status_code == 200


def test_every_route_accepts_the_api_token(app: Any) -> None:
    client = app.test_client()
    for rule, method, url in routes(app):
        if is_public(rule) or method not in ("GET",):
            continue
        resp = client.open(url, method=method, headers=AUTH)
        assert resp.status_code not in (401, 403), (url, resp.status_code)
        assert not (resp.status_code in (302, 303) and "/login" in resp.headers.get("Location", ""))


def test_api_accepts_the_browser_session(client: Any) -> None:
    assert client.get("/api/messages").status_code == 401
    login(client)
    assert client.get("/api/messages").status_code == 200


def test_a_wrong_token_is_refused_even_with_a_session(client: Any) -> None:
    login(client)
    assert client.get("/api/messages", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_unknown_routes_are_404(client: Any) -> None:
    assert client.get("/api/nothing-here").status_code == 404
    assert client.get("/nothing-here").status_code == 404


# -- login and logout ---------------------------------------------------------------


def test_login_page_is_public_and_styled(client: Any) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    assert 'type="password"' in page.get_data(as_text=True)
    css = client.get("/static/app.css")
    assert css.status_code == 200 and css.mimetype == "text/css"


def test_login_and_redirect_to_next(client: Any) -> None:
    resp = client.get("/messages?kind=image")
    assert resp.headers["Location"] == "/login?next=%2Fmessages%3Fkind%3Dimage"
    done = login(client, next_path="/messages?kind=image")
    assert done.status_code == 303
    assert done.headers["Location"] == "/messages?kind=image"
    assert client.get("/messages").status_code == 200


def test_wrong_password(client: Any) -> None:
    resp = login(client, password="wrong")
    assert resp.status_code == 401
    assert "Wrong password" in resp.get_data(as_text=True)
    assert client.get("/messages").status_code == 302


def test_no_admin_password_configured_means_no_login(make_app: Any) -> None:
    client = make_app(RECEIVER_ADMIN_PASSWORD="").test_client()
    page = client.get("/login").get_data(as_text=True)
    assert "RECEIVER_ADMIN_PASSWORD" in page
    assert login(client, password="").status_code in (400, 401)
    assert login(client, password="anything").status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "\\\\evil.example",
        "/%0d%0aSet-Cookie:x",
        "http:/evil.example",
        "",
        "messages",
        "/messages\r\nX: y",
    ],
)
def test_next_must_be_a_local_path(client: Any, target: str) -> None:
    resp = login(client, next_path=target)
    assert resp.status_code == 303
    location = resp.headers["Location"]
    assert (
        location in ("/messages", target)
        and location.startswith("/")
        and not location.startswith("//")
    )
    assert "\n" not in location and "\r" not in location


def test_safe_next() -> None:
    assert safe_next("/messages/MM1?x=1") == "/messages/MM1?x=1"
    assert safe_next("//evil") == "/messages"
    assert safe_next("/ok\u200b") == "/messages"


def test_login_needs_the_csrf_token(client: Any) -> None:
    client.get("/login")
    resp = client.post("/login", data={"password": ADMIN_PASSWORD})
    assert resp.status_code == 400
    assert client.get("/messages").status_code == 302


def test_logout(client: Any) -> None:
    login(client)
    token = csrf_of(client)
    resp = client.post("/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and resp.headers["Location"] == "/login"
    assert client.get("/messages").status_code == 302
    assert client.get("/api/messages").status_code == 401


def test_logout_needs_the_csrf_token(client: Any) -> None:
    login(client)
    assert client.post("/logout").status_code == 400
    assert client.get("/messages").status_code == 200


def test_csrf_token_changes_at_login(client: Any) -> None:
    before = re.search(
        r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)
    ).group(1)
    login(client)
    assert csrf_of(client) != before


def test_session_cookie_flags(client: Any) -> None:
    resp = login(client)
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("mmsr_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie


def test_session_cookie_is_secure_behind_https(make_app: Any) -> None:
    client = make_app(RECEIVER_PUBLIC_URL="https://mms.example.com").test_client()
    resp = login(client)
    assert "Secure" in resp.headers["Set-Cookie"]


def test_old_sessions_expire(client: Any) -> None:
    login(client)
    with client.session_transaction() as sess:
        sess["login_at"] = int(time.time()) - 13 * 3600
    assert client.get("/messages").status_code == 302


# -- rate limiting ---------------------------------------------------------------------


def test_login_rate_limit_per_client(client: Any) -> None:
    for _ in range(5):
        assert login(client, password="wrong", REMOTE_ADDR="10.9.9.9").status_code == 401
    blocked = login(client, password=ADMIN_PASSWORD, REMOTE_ADDR="10.9.9.9")
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert "Too many failed logins" in blocked.get_data(as_text=True)
    # Another client is not affected.
    assert login(client, REMOTE_ADDR="10.9.9.10").status_code == 303


def test_login_rate_limit_uses_the_trusted_proxy_hop(make_app: Any) -> None:
    client = make_app(RECEIVER_PROXY_HOPS="1").test_client()
    for i in range(5):
        # A forged left-most address changes nothing: only the proxy's entry counts.
        headers = {"X-Forwarded-For": f"1.1.1.{i}, 203.0.113.7"}
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(
            1
        )
        client.post("/login", data={"password": "x", "csrf_token": token}, headers=headers)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    resp = client.post(
        "/login",
        data={"password": ADMIN_PASSWORD, "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert resp.status_code == 429
    other = client.post(
        "/login",
        data={"password": ADMIN_PASSWORD, "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.8"},
    )
    assert other.status_code == 303


def test_limiter_window(app: Any) -> None:
    limiter = AuthThrottle(app.extensions["receiver"].index, failures=3, window=60)
    for t in (0.0, 1.0, 2.0):
        limiter.failed("a", now=t)
    assert limiter.retry_after("a", now=3.0) == 57
    assert limiter.retry_after("a", now=60.5) == 0  # the first failure left the window
    assert limiter.retry_after("b", now=3.0) == 0
    limiter.succeeded("a")
    assert limiter.retry_after("a", now=3.0) == 0


def test_limiter_is_shared_through_the_index(app: Any) -> None:
    # Two throttles on one index stand for two gunicorn workers.
    index = app.extensions["receiver"].index
    first, second = AuthThrottle(index, failures=3), AuthThrottle(index, failures=3)
    assert first.reserve("10.0.0.1", now=100.0) == 0
    assert second.reserve("10.0.0.1", now=101.0) == 0
    assert first.reserve("10.0.0.1", now=102.0) == 0
    assert second.reserve("10.0.0.1", now=103.0) == 57
    assert first.retry_after("10.0.0.2", now=103.0) == 0


def test_limiter_global_backoff_never_locks_a_fresh_address(app: Any) -> None:
    limiter = AuthThrottle(app.extensions["receiver"].index, account_failures=8)
    for n in range(8):
        limiter.failed(f"10.1.0.{n}", now=10.0)
    # The account is under attack: an address with one failure waits...
    assert limiter.retry_after("10.1.0.1", now=11.0) == 59
    # ...but an address that has not failed is still checked.
    assert limiter.retry_after("10.1.0.99", now=11.0) == 0
    assert limiter.retry_after("10.1.0.1", now=71.0) == 0


def test_limiter_memory_is_bounded(app: Any) -> None:
    limiter = AuthThrottle(app.extensions["receiver"].index, failures=3, window=60)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", now=float(i))
    # Only the last window's failures are kept.
    assert limiter.count() <= 61


# -- CSRF on deletion --------------------------------------------------------------------


def test_delete_without_csrf_is_refused(app: Any, client: Any, seed: Seeder) -> None:
    made = seed.message(items=[Item()])
    login(client)
    assert client.post(f"/messages/{made}/delete", data={"confirm": "yes"}).status_code == 400
    assert (
        client.post(
            f"/messages/{made}/delete", data={"confirm": "yes", "csrf_token": "forged"}
        ).status_code
        == 400
    )
    assert client.delete(f"/api/messages/{made}").status_code == 400
    assert (
        client.delete(f"/api/messages/{made}", headers={"X-CSRF-Token": "forged"}).status_code
        == 400
    )
    assert app.extensions["receiver"].index.get_message(made) is not None
    token = csrf_of(client)
    assert (
        client.delete(f"/api/messages/{made}", headers={"X-CSRF-Token": token}).status_code == 200
    )
    assert app.extensions["receiver"].index.get_message(made) is None


def test_bearer_calls_need_no_csrf(app: Any, client: Any, seed: Seeder) -> None:
    made = seed.message(items=[Item()])
    (item,) = seed.media_rows(made)
    assert client.delete(f"/api/messages/{made}", headers=AUTH).status_code == 200
    assert app.extensions["receiver"].index.get_message(made) is None
    assert client.get(f"/api/messages/{made}", headers=AUTH).status_code == 404
    assert not app.extensions["receiver"].store.exists(item["storage_key"])


# -- headers everywhere --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/login", "/healthz", "/messages", "/api/messages", "/nothing", "/static/app.css"]
)
def test_security_headers_on_every_response(client: Any, path: str) -> None:
    resp = client.get(path)
    assert resp.headers["Content-Security-Policy"] == PAGE_CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
