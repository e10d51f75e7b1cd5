"""`serve --ngrok`: the tunnel's URL becomes the public URL, and a number can point at it.

The ngrok SDK is replaced by a module object with the same `forward()` shape;
the Twilio side is the project's fake REST API on loopback. No network.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from receiver import tunnel
from receiver.errors import ConfigError
from receiver.settings import Settings
from tests.conftest import ACCOUNT_SID, TOKEN, base_env
from tests.support.fake_twilio import FakeTwilio

TUNNEL_URL = "https://f00d-203-0-113-7.ngrok-free.app"
NUMBER = "+15017122661"


class FakeListener:
    def __init__(self, url: str) -> None:
        self._url = url

    def url(self) -> str:
        return self._url


def fake_ngrok(url: str = TUNNEL_URL, error: Exception | None = None) -> Any:
    calls: list[tuple[Any, dict[str, Any]]] = []

    def forward(addr: Any = None, **options: Any) -> FakeListener:
        calls.append((addr, options))
        if error is not None:
            raise error
        return FakeListener(url)

    module = types.ModuleType("ngrok")
    module.forward = forward  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(base_env(tmp_path))


def test_tunnel_url_becomes_the_public_url(settings: Settings) -> None:
    ngrok = fake_ngrok()
    lines: list[str] = []
    out = tunnel.open_tunnel(
        settings, 8123, ngrok_module=ngrok, echo=lines.append, environ={"NGROK_AUTHTOKEN": "2abc"}
    )
    assert ngrok.calls == [("127.0.0.1:8123", {"authtoken_from_env": True})]
    assert out.public_url == TUNNEL_URL
    assert settings.public_url == ""  # the caller's settings are not changed
    assert out.auth_token == settings.auth_token and out.database_url == settings.database_url
    assert f"{TUNNEL_URL}/twilio/messaging" in "\n".join(lines)
    assert any("--configure-number" in line for line in lines)


def test_missing_authtoken_names_the_variable(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="NGROK_AUTHTOKEN"):
        tunnel.open_tunnel(settings, 8123, ngrok_module=fake_ngrok(), environ={})


def test_sdk_errors_become_a_clear_error(settings: Settings) -> None:
    broken = fake_ngrok(error=RuntimeError("failed to connect session"))
    with pytest.raises(ConfigError, match="could not open a tunnel.*internet access"):
        tunnel.open_tunnel(settings, 8123, ngrok_module=broken, environ={"NGROK_AUTHTOKEN": "2abc"})


def test_missing_sdk_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setitem(sys.modules, "ngrok", None)  # import ngrok -> ImportError
    with pytest.raises(ConfigError, match=r"mms-receiver\[ngrok\]"):
        tunnel.open_tunnel(settings, 8123, environ={"NGROK_AUTHTOKEN": "2abc"})


def test_configure_number_points_the_number_at_the_tunnel(tmp_path: Path) -> None:
    with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TOKEN, numbers=[NUMBER]) as fake:
        (number,) = fake.numbers.values()
        number["sms_url"] = "https://old.example.com/sms"
        settings = Settings.from_env(base_env(tmp_path, TWILIO_API_BASE=fake.url))
        lines: list[str] = []
        out = tunnel.open_tunnel(
            settings,
            8123,
            configure_number=NUMBER,
            ngrok_module=fake_ngrok(),
            echo=lines.append,
            environ={"NGROK_AUTHTOKEN": "2abc"},
        )
        assert out.public_url == TUNNEL_URL
        assert number["sms_url"] == f"{TUNNEL_URL}/twilio/messaging"
        assert number["sms_method"] == "POST"
    assert any("https://old.example.com/sms ->" in line for line in lines)


def test_configure_number_refuses_a_number_of_another_account(tmp_path: Path) -> None:
    with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TOKEN, numbers=[NUMBER]) as fake:
        settings = Settings.from_env(base_env(tmp_path, TWILIO_API_BASE=fake.url))
        with pytest.raises(ConfigError, match=r"\+15550009999 is not a phone number"):
            tunnel.open_tunnel(
                settings,
                8123,
                configure_number="+15550009999",
                ngrok_module=fake_ngrok(),
                echo=lambda _: None,
                environ={"NGROK_AUTHTOKEN": "2abc"},
            )


def test_serve_ngrok_runs_gunicorn_with_the_tunnel_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --ngrok`: the CLI opens the tunnel and hands its URL to the server."""
    from prometheus_client import values

    from receiver import server

    # Building the server switches the process to multiprocess metrics
    # (`metrics.setup_multiprocess`); undone after the test, for the tests that follow.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    started: list[Settings] = []
    monkeypatch.setattr(server.ReceiverServer, "run", lambda self: started.append(self.settings))
    monkeypatch.setitem(sys.modules, "ngrok", fake_ngrok())
    from receiver.cli import main

    env = {**base_env(tmp_path), "NGROK_AUTHTOKEN": "2abc"}
    result = CliRunner().invoke(main, ["serve", "--port", "8123", "--ngrok"], env=env)
    assert result.exit_code == 0, result.output
    assert [s.public_url for s in started] == [TUNNEL_URL]
    assert f"webhook URL : {TUNNEL_URL}/twilio/messaging" in result.output
