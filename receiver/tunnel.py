"""`serve --ngrok`: a public https URL for a local service, through the ngrok Python SDK.

The SDK is an optional extra (``pip install 'mms-receiver[ngrok]'``); its
wheel carries the agent, so nothing else is installed. It needs an account's
``NGROK_AUTHTOKEN`` in the environment and internet access.

`open_tunnel` forwards the tunnel to the local port, returns Settings whose
`public_url` is the tunnel's URL (the URL Twilio signs, so signatures verify),
prints the webhook URL and, when asked, points a Twilio number's messaging
webhook at it through the REST API.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType
from typing import Any

import click

from receiver.errors import ConfigError
from receiver.settings import Settings

WEBHOOK_PATH = "/twilio/messaging"
TOKEN_ENV = "NGROK_AUTHTOKEN"  # noqa: S105 (the variable name, not a secret)

# The SDK closes a tunnel when its listener object is collected; keep them for
# the life of the process.
_LISTENERS: list[Any] = []

Echo = Callable[[str], None]


def load_ngrok() -> ModuleType:
    """Import the ngrok SDK, or ConfigError saying how to install it."""
    try:
        return importlib.import_module("ngrok")
    except ImportError:
        raise ConfigError(
            "--ngrok needs the ngrok Python SDK: pip install 'mms-receiver[ngrok]'"
        ) from None


def open_tunnel(
    settings: Settings,
    port: int,
    *,
    configure_number: str | None = None,
    ngrok_module: Any = None,
    rest_client: Any = None,
    echo: Echo = click.echo,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Open an https tunnel to 127.0.0.1:`port`; Settings with `public_url` set to its URL.

    With `configure_number` (an E.164 number of the account), the number's
    messaging webhook is set to the tunnel's ``/twilio/messaging`` (POST).
    `ngrok_module` and `rest_client` replace the SDK and the REST client
    (``TwilioRest``); by default both are imported on first use.
    """
    env = os.environ if environ is None else environ
    if not env.get(TOKEN_ENV, "").strip():
        raise ConfigError(
            f"--ngrok needs {TOKEN_ENV}: copy the authtoken from your ngrok dashboard "
            f"and export {TOKEN_ENV}=... (the tunnel also needs internet access)"
        )
    if settings.public_url:
        echo(f"note: RECEIVER_PUBLIC_URL ({settings.public_url}) is replaced by the tunnel's URL")
    ngrok = ngrok_module if ngrok_module is not None else load_ngrok()
    try:
        listener = ngrok.forward(f"127.0.0.1:{port}", authtoken_from_env=True)
    except Exception as exc:  # the SDK raises its own (Rust-side) error types
        raise ConfigError(
            f"ngrok could not open a tunnel ({exc}); check {TOKEN_ENV} and internet access"
        ) from None
    _LISTENERS.append(listener)
    url = str(listener.url()).rstrip("/")
    if not url.startswith("https://"):
        raise ConfigError(f"ngrok returned {url!r}; expected an https:// URL")
    tunneled = replace(settings, public_url=url)
    webhook = url + WEBHOOK_PATH
    echo(f"ngrok tunnel: {url} -> http://127.0.0.1:{port}")
    echo(f"  webhook URL : {webhook}")
    if configure_number:
        point_number(tunneled, configure_number, webhook, rest_client=rest_client, echo=echo)
    else:
        echo(
            "  set it as your Twilio number's messaging webhook (HTTP POST), or pass "
            "--configure-number +1..."
        )
    return tunneled


def point_number(
    settings: Settings,
    number: str,
    webhook_url: str,
    *,
    rest_client: Any = None,
    echo: Echo = click.echo,
) -> dict[str, Any]:
    """Set the messaging webhook of `number` to `webhook_url` (POST); returns the updated number."""
    client = rest_client
    if client is None:
        rest = importlib.import_module("receiver.twilio.rest")
        client = rest.TwilioRest.from_settings(settings)
    found = client.find_incoming_number(number)
    if found is None:
        raise ConfigError(
            f"--configure-number: {number} is not a phone number of account "
            f"{settings.account_sid}; check the number (E.164, e.g. +15017122661)"
        )
    before = found.get("sms_url") or "(none)"
    updated: dict[str, Any] = client.update_incoming_number(
        found["sid"], {"SmsUrl": webhook_url, "SmsMethod": "POST"}
    )
    echo(f"  {number}: messaging webhook {before} -> {updated.get('sms_url', webhook_url)}")
    return updated
