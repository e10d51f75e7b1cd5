"""A signed-webhook poster: builds Twilio-style parameters and posts them signed."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from receiver.twilio.signature import compute_signature

TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "1" * 32
FORM = "application/x-www-form-urlencoded"


def new_sid(prefix: str = "MM") -> str:
    """A random SID of Twilio's form."""
    return prefix + secrets.token_hex(16)


def media_path(message_sid: str, n: int) -> str:
    """A Twilio-like media path for a loopback media server."""
    return f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media/ME{message_sid[2:-2]}{n:02d}"


def inbound_params(
    sid: str | None = None,
    *,
    body: str = "",
    media: Sequence[tuple[str, str]] = (),
    from_: str = "+15551230001",
    to: str = "+15557654321",
    **extra: str,
) -> list[tuple[str, str]]:
    """The parameters of an inbound message, as Twilio sends them."""
    sid = sid or new_sid("MM" if media else "SM")
    params = [
        ("MessageSid", sid),
        ("SmsMessageSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", from_),
        ("To", to),
        ("Body", body),
        ("NumMedia", str(len(media))),
        ("NumSegments", "1"),
        ("ApiVersion", "2010-04-01"),
    ]
    for i, (url, ctype) in enumerate(media):
        params += [(f"MediaUrl{i}", url), (f"MediaContentType{i}", ctype)]
    params += list(extra.items())
    return params


class WebhookPoster:
    """Posts signed webhooks to a Flask test client (or any base URL with requests)."""

    def __init__(self, client: Any, *, token: str = TOKEN, base: str = "http://localhost") -> None:
        self.client = client
        self.token = token
        self.base = base

    def sign(self, url: str, params: Sequence[tuple[str, str]]) -> str:
        """The signature Twilio would send for `url` and `params`."""
        return compute_signature(self.token, url, params)

    def post(
        self,
        params: Sequence[tuple[str, str]],
        *,
        path: str = "/twilio/messaging",
        signed_url: str | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """POST the form; signed for `signed_url` (default: the URL posted to)."""
        url = signed_url or self.base + path
        sig = signature if signature is not None else self.sign(url, params)
        all_headers = {"X-Twilio-Signature": sig, **(headers or {})}
        return self.client.post(
            path,
            data=urlencode(list(params)),
            content_type=FORM,
            headers=all_headers,
            base_url=self.base,
            **kwargs,
        )
