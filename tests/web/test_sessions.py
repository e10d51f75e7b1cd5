"""Server-side browser sessions: logout, revoke-all and a password change end every copy."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner

from receiver.cli import main
from receiver.index.sessions import IDLE_SECONDS, LIFETIME_SECONDS, SessionStore
from tests.conftest import ADMIN_PASSWORD, base_env
from tests.web.test_auth import AUTH, csrf_of, login


class Clock:
    """A settable clock for the session store."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cookie(client: Any) -> str:
    value: str = client.get_cookie("mmsr_session").value
    return value


def replay(app: Any, value: str) -> Any:
    """A new browser holding a copied cookie."""
    other = app.test_client()
    other.set_cookie("mmsr_session", value)
    return other


def test_logout_ends_every_copy_of_the_cookie(app: Any, client: Any) -> None:
    assert login(client).status_code == 303
    copied = cookie(client)
    thief = replay(app, copied)
    assert thief.get("/messages").status_code == 200
    token = csrf_of(client)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    page = thief.get("/messages")
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/login")
    api = thief.get("/api/messages")
    assert api.status_code == 401
    # The CSRF token of the old page no longer deletes anything either.
    assert thief.delete(
        "/api/messages/SM" + "0" * 32, headers={"X-CSRF-Token": token}
    ).status_code in (
        302,
        401,
    )


def test_login_rotates_the_session_id(app: Any, client: Any) -> None:
    login(client)
    first = cookie(client)
    # Logging in again (the form posted from a logged-in browser) gives a new id.
    again = client.post("/login", data={"password": ADMIN_PASSWORD, "csrf_token": csrf_of(client)})
    assert again.status_code == 303
    second = cookie(client)
    assert first != second
    assert replay(app, first).get("/messages").status_code == 302
    assert replay(app, second).get("/messages").status_code == 200


def test_revoke_all_from_the_command_line(app: Any, tmp_path: Any) -> None:
    browsers = [app.test_client() for _ in range(3)]
    for browser in browsers:
        login(browser)
    copies = [cookie(b) for b in browsers]
    result = CliRunner().invoke(main, ["sessions", "revoke", "--all"], env=base_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert "revoked 3 browser session(s)" in result.output
    for value in copies:
        assert replay(app, value).get("/messages").status_code == 302
    assert CliRunner().invoke(main, ["sessions", "revoke"], env=base_env(tmp_path)).exit_code == 2


def test_a_password_change_ends_older_sessions(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    login(client)
    copied = cookie(client)
    changed = make_app(RECEIVER_ADMIN_PASSWORD="a-new-admin-password")
    assert replay(changed, copied).get("/messages").status_code == 302
    assert replay(app, copied).get("/messages").status_code == 302  # the record is gone


def test_idle_and_absolute_expiry_with_an_injected_clock(app: Any) -> None:
    clock = Clock()
    store: SessionStore = app.extensions["receiver"].sessions
    store.clock = clock
    client = app.test_client()
    login(client)
    assert client.get("/messages").status_code == 200
    clock.now += IDLE_SECONDS - 5
    assert client.get("/messages").status_code == 200  # activity keeps it alive
    clock.now += IDLE_SECONDS - 5
    assert client.get("/messages").status_code == 200
    clock.now += IDLE_SECONDS + 1  # idle too long
    assert client.get("/messages").status_code == 302

    login(client)
    start = clock.now
    while clock.now < start + LIFETIME_SECONDS - IDLE_SECONDS:
        clock.now += IDLE_SECONDS - 60
        assert client.get("/messages").status_code == 200
    clock.now = start + LIFETIME_SECONDS  # never idle, but 12 h old
    assert client.get("/messages").status_code == 302


def test_expired_records_are_cleaned_up(app: Any) -> None:
    clock = Clock()
    store = SessionStore(app.extensions["receiver"].index, clock=clock)
    for _ in range(3):
        store.open("admin", "c")
    clock.now += IDLE_SECONDS + 1
    live = store.open("admin", "c")
    assert store.count() == 1
    assert store.check(live, "c") is not None
    assert store.check(live, "other password") is None


def test_bearer_calls_do_not_need_a_session(client: Any) -> None:
    assert client.get("/api/messages", headers=AUTH).status_code == 200


def test_login_limit_holds_across_workers(make_app: Any) -> None:
    # Two apps on one index stand for two gunicorn workers.
    first, second = make_app().test_client(), make_app().test_client()
    for n in range(5):
        worker = (first, second)[n % 2]
        assert login(worker, password="wrong", REMOTE_ADDR="10.8.8.8").status_code == 401
    for worker in (first, second):
        assert login(worker, REMOTE_ADDR="10.8.8.8").status_code == 429
    assert login(second, REMOTE_ADDR="10.8.8.9").status_code == 303
