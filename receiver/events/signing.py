"""Standard Webhooks signatures (https://www.standardwebhooks.com/, "Signature scheme").

A secret is `whsec_` + base64 of random bytes; the signature of a message is
`v1,` + base64 of HMAC-SHA256 over `"{webhook-id}.{webhook-timestamp}.{body}"`
keyed with the decoded secret. Several signatures (during a secret rotation)
are sent space-separated in one `webhook-signature` header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
#: Secret length in bytes (the spec asks for 24 to 64).
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh `whsec_` secret."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def check_secret(secret: str) -> str:
    """`secret` if it is `whsec_` + base64 of 24 to 64 bytes; ValueError naming the fix."""
    if not secret.startswith(PREFIX):
        raise ValueError("an event secret starts with whsec_ (generate one with `endpoints add`)")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an event secret is whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("an event secret holds 24 to 64 bytes of key")
    return secret


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one message under one secret."""
    key = base64.b64decode(secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(msg_id: str, timestamp: int, body: bytes, secrets_: Iterable[str]) -> dict[str, str]:
    """The three `webhook-*` headers, signed with every secret given."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_),
    }
