"""Fixtures and helpers shared by the web tests: seeded rows, logging in, CSRF tokens."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.web.seed import Seeder

#: The Content-Security-Policy of every HTML page (served files add "; sandbox").
PAGE_CSP = (
    "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture
def seed(app: Any) -> Seeder:
    """Writes messages and media for `app` the way the pipeline leaves them."""
    return Seeder(app)


def csrf_of(client: Any, path: str = "/messages", **environ: Any) -> str:
    """The CSRF token in the form of the page at `path`."""
    html = client.get(path, environ_base=environ).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def login(
    client: Any, password: str = ADMIN_PASSWORD, next_path: str = "/messages", **environ: Any
) -> Any:
    """Submit the login form as a browser would; returns the response."""
    token = csrf_of(client, "/login", **environ)
    return client.post(
        "/login",
        data={"password": password, "csrf_token": token, "next": next_path},
        environ_base=environ,
    )
