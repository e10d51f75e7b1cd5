"""Shared fixtures: settings on a temporary data dir, the app, a live server, databases."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mediaserver import MediaServer
from tests.support.postgres import PG_HOST, PG_PORT, fresh_database, pg_available
from tests.support.s3server import moto_server_fixture
from tests.support.services import free_port, require, wait_healthy
from tests.support.webhooks import ACCOUNT_SID, TOKEN, WebhookPoster

API_TOKEN = "test-api-token-0123456789abcdef"
#: Headers of an API caller holding the API token.
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ADMIN_PASSWORD = "test-admin-password"


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a service on a temporary data dir with known credentials."""
    env = {
        "RECEIVER_DATA_DIR": str(tmp / "data"),
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "RECEIVER_API_TOKEN": API_TOKEN,
        "RECEIVER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "RECEIVER_SECRET_KEY": "test-secret-key",
        "RECEIVER_INLINE_DEADLINE": "5",
    }
    env.update(extra)
    return env


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fresh environment (SQLite + local disk under tmp_path)."""
    return base_env(tmp_path)


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    """Factory: an app built from an environment mapping (services closed afterwards)."""
    from receiver import create_app
    from receiver.settings import Settings

    apps: list[Any] = []

    def factory(**overrides: str) -> Any:
        environ = base_env(tmp_path, **overrides)
        app = create_app(Settings.from_env(environ))
        app.testing = True
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["receiver"].close()


@pytest.fixture
def app(make_app: Any) -> Any:
    """The app on embedded defaults in a temporary directory."""
    return make_app()


@pytest.fixture
def client(app: Any) -> Any:
    """A Flask test client."""
    return app.test_client()


@pytest.fixture
def poster(client: Any) -> WebhookPoster:
    """Posts signed webhooks to the test client."""
    return WebhookPoster(client)


@pytest.fixture
def media_server() -> Iterator[MediaServer]:
    """A real media server on loopback."""
    with MediaServer() as server:
        yield server


moto_s3 = moto_server_fixture()

# -- PostgreSQL ---------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    require(pg_available(), f"PostgreSQL is not running on {PG_HOST}:{PG_PORT}")
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each index test runs on SQLite and on the local PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


# -- live server ----------------------------------------------------------------


class LiveServer:
    """`mms-receiver serve` as a real subprocess on a loopback port."""

    def __init__(self, env: dict[str, str], port: int, args: list[str] | None = None) -> None:
        self.env = env
        self.port = port
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(env["RECEIVER_DATA_DIR"]).parent / f"serve-{port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LiveServer:
        full_env = {**os.environ, **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "serve", "--port", str(self.port), *self.args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc = self.proc
        wait_healthy(self.url, lambda: proc.poll() is None, self.log, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Any]:
    """Factory: start `serve` subprocesses with an environment; all stopped afterwards."""
    servers: list[LiveServer] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> LiveServer:
        server = LiveServer(env or base_env(tmp_path), free_port(), args)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


# -- clamd --------------------------------------------------------------------


@pytest.fixture(scope="session")
def clamd() -> Iterator[Any]:
    """A real clamd on a unix socket in a temp dir, with a generated signature database,
    shared by the session (start-up with the tiny database takes a fraction of a second)."""
    from tests.support.clamd import running_clamd

    with running_clamd() as server:
        yield server
