"""Seeded traffic for the analytics tests: inbound messages with media, outbound with prices.

`TRAFFIC` is the specification; tests derive what each figure must be from it
with plain Python, and compare with what the index aggregates in SQL.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from receiver.index.schema import media, messages, outbound_messages
from receiver.index.threads import rebuild as rebuild_threads

ACCOUNT = "AC" + "a" * 32


@dataclass(frozen=True)
class In:
    """One inbound message: when, its keyword, and its media as (kind, size) pairs."""

    at: datetime
    keyword: str | None = None
    items: tuple[tuple[str, int | None], ...] = ()


@dataclass(frozen=True)
class Out:
    """One outbound message: when, status, error code, Twilio price, idempotency key."""

    at: datetime
    status: str
    error_code: int | None = None
    price: float | None = None
    key: str | None = None
    accepted: bool = True  # has a MessageSid (Twilio accepted it)


def _t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 5, day, hour, minute, tzinfo=UTC)


@dataclass(frozen=True)
class Traffic:
    inbound: list[In] = field(default_factory=list)
    outbound: list[Out] = field(default_factory=list)


TRAFFIC = Traffic(
    inbound=[
        In(_t(1, 0, 5), items=(("image", 50_000), ("image", 2_000_000))),
        In(_t(1, 9, 30), items=(("video", 6_000_000),)),
        In(_t(1, 23, 59), keyword="STOP"),
        In(_t(2, 0, 0), keyword="START"),
        In(_t(2, 12, 0), items=(("contact", 900), ("audio", 300_000), ("other", None))),
        In(_t(4, 8, 0), keyword="STOP"),
        In(_t(4, 8, 1), keyword="HELP"),
        In(_t(6, 0, 0)),  # outside the tests' ranges
    ],
    outbound=[
        Out(_t(1, 10), "delivered", price=-0.02, key="spring:aaa"),
        Out(_t(1, 10, 1), "delivered", price=-0.02, key="spring:bbb"),
        Out(_t(1, 11), "undelivered", 30003, price=-0.02, key="spring:ccc"),
        Out(_t(1, 12), "failed", 30007, price=-0.0075, key="summer:aaa"),
        Out(_t(2, 9), "read", price=-0.01),
        Out(_t(2, 9, 30), "sent", key="summer:bbb"),
        Out(_t(2, 10), "queued"),
        Out(_t(2, 11), "failed", 21610, accepted=False),  # refused before Twilio: not counted
        Out(_t(4, 7), "failed", 30007, price=-0.0075, key="summer:ccc"),
        Out(_t(6, 0), "delivered", price=-0.5),  # outside
    ],
)


def seed(engine: Engine, traffic: Traffic = TRAFFIC) -> None:
    """Insert `traffic` the way the pipeline and the outbound path leave rows."""
    message_rows, media_rows, out_rows = [], [], []
    for item in traffic.inbound:
        sid = "MM" + os.urandom(16).hex()
        message_rows.append(
            {
                "sid": sid,
                "account_sid": ACCOUNT,
                "direction": "inbound",
                "from_addr": "+15550001111",
                "from_channel": "sms",
                "to_addr": "+15017122661",
                "to_channel": "sms",
                "body": item.keyword or "hello",
                "num_media": len(item.items),
                "keyword": item.keyword,
                "params": json.dumps([["MessageSid", sid]]),
                "state": "complete",
                "received_at": item.at,
                "updated_at": item.at,
            }
        )
        for idx, (kind, size) in enumerate(item.items):
            media_rows.append(
                {
                    "message_sid": sid,
                    "idx": idx,
                    "url": f"https://api.twilio.com/m/{sid}/{idx}",
                    "kind": kind,
                    "size_bytes": size,
                    "state": "stored" if size is not None else "failed",
                    "created_at": item.at,
                    "updated_at": item.at,
                }
            )
    for o in traffic.outbound:
        out_rows.append(
            {
                "idempotency_key": o.key,
                "sid": ("SM" + os.urandom(16).hex()) if o.accepted else None,
                "to_addr": "+15558675310",
                "from_addr": "+15017122661",
                "body": "sent",
                "media": "[]",
                "status": o.status,
                "error_code": o.error_code,
                "error_message": None,
                "price": o.price,
                "price_unit": "USD" if o.price is not None else None,
                "created_at": o.at,
                "updated_at": o.at,
            }
        )
    with engine.begin() as conn:
        for table, rows in (
            (messages, message_rows),
            (media, media_rows),
            (outbound_messages, out_rows),
        ):
            if rows:
                conn.execute(insert(table), rows)
        rebuild_threads(conn)  # rows written past the index's write path
