"""Rows of test messages and media items, as the workflows hand them to the index."""

from __future__ import annotations

import json

ACCOUNT = "AC" + "a" * 32


def sid(n: int) -> str:
    """The MessageSid of test message `n`."""
    return f"MM{n:032d}"


def message(n: int, **extra: object) -> dict[str, object]:
    """Index columns of test message `n`, with `extra` columns replaced."""
    row: dict[str, object] = {
        "sid": sid(n),
        "account_sid": ACCOUNT,
        "from_addr": "+15550001111",
        "from_channel": "sms",
        "to_addr": "+15550002222",
        "to_channel": "sms",
        "body": f"message {n}",
        "num_media": 3,
        "params": json.dumps([["MessageSid", sid(n)]]),
    }
    row.update(extra)
    return row


def media_rows(count: int = 3) -> list[dict[str, object]]:
    """Media columns of `count` items as a webhook announces them."""
    return [
        {"idx": i, "url": f"https://api.twilio.com/m/{i}", "declared_type": "image/jpeg"}
        for i in range(count)
    ]
