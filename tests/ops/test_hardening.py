"""Weak credentials refused, secrets of any length masked, /m/ tokens shortened, redirects relative."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.logs import RedactionFilter
from tests.conftest import base_env


@pytest.mark.parametrize(
    ("name", "value", "least"),
    [("RECEIVER_ADMIN_PASSWORD", "a", 12), ("RECEIVER_API_TOKEN", "x" * 23, 24)],
)
def test_check_and_serve_refuse_short_credentials(
    tmp_path: Path, name: str, value: str, least: int
) -> None:
    env = base_env(tmp_path, **{name: value})
    checked = CliRunner().invoke(main, ["check"], env=env)
    assert checked.exit_code == 1
    assert f"configuration: FAIL  {name} is {len(value)} characters long" in checked.output
    assert f"at least {least}" in checked.output
    assert "secrets.token_urlsafe" in checked.output
    assert "configuration: ok" not in checked.output
    served = CliRunner().invoke(main, ["serve", "--port", "1"], env=env)
    assert served.exit_code == 1
    assert name in served.output


def test_check_accepts_long_credentials(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check"], env=base_env(tmp_path))
    assert "configuration: ok" in result.output, result.output


def test_short_secrets_are_masked_where_they_stand_alone() -> None:
    redaction = RedactionFilter(["a", "pw1"])
    record = logging.LogRecord(
        "x", logging.INFO, "", 0, "login with pw1 and token a; banana", (), None
    )
    redaction.filter(record)
    assert record.getMessage() == "login with *** and token ***; banana"


def test_link_tokens_are_shortened_in_every_log_line() -> None:
    token = "AAAAAAAAAAAAAAAAAAAAAAAA.BBBBBBBB"
    record = logging.LogRecord(
        "gunicorn.access",
        logging.INFO,
        "",
        0,
        '127.0.0.1 "GET /m/%s/photo.jpg HTTP/1.1" 200',
        (token,),
        None,
    )
    RedactionFilter().filter(record)
    line = record.getMessage()
    assert token not in line
    assert "/m/AAAAAAAA\u2026/photo.jpg" in line


@pytest.mark.parametrize("path", ["/api//messages", "/messages//x", "/m//abc"])
def test_no_redirect_takes_its_host_from_the_request(client: Any, path: str) -> None:
    resp = client.get(path, headers={"Host": "evil.example"})
    location = resp.headers.get("Location", "")
    assert "evil.example" not in location
    if resp.status_code in (301, 302, 303, 307, 308):
        assert location.startswith("/") and not location.startswith("//")
