"""receiver.index.rollups on SQLite and PostgreSQL: triggers keep the per-day roll-ups exact.

Whatever writes the rows (bulk inserts, the status path, media outcomes,
erasing a message), the figures read from the roll-ups equal the figures
grouped from the rows, and the roll-up tables equal a rebuild from scratch.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import delete, func, select, update

from receiver.index import MediaIndex
from receiver.index.analytics import DateRange, analytics
from receiver.index.db import upgrade
from receiver.index.outbound import OutboundIndex
from receiver.index.rollups import BACKFILLED, rebuild
from receiver.index.schema import (
    daily_batches,
    daily_inbound,
    daily_media,
    daily_outbound,
    media,
    messages,
    meta,
    outbound_messages,
)
from receiver.twilio.webhook import parse_status
from tests.support.traffic import TRAFFIC, seed

ACCT = "AC" + "1" * 32
TABLES = (daily_inbound, daily_outbound, daily_batches, daily_media)
RANGES = (
    DateRange(date(2024, 5, 1), date(2024, 5, 4)),
    DateRange(date(2024, 5, 2), date(2024, 5, 3)),  # hourly: read from the rows
    DateRange(date(2014, 1, 1), date(2024, 12, 31)),
)


def tables(index: MediaIndex) -> dict[str, list[tuple[object, ...]]]:
    """Every roll-up row that counts something, its parts summed, in key order."""
    out = {}
    with index.engine.connect() as conn:
        for table in TABLES:
            keys = [c for c in table.primary_key if c.name != "part"]
            values = [func.sum(c) for c in table.c if c not in keys and c.name != "part"]
            rows = conn.execute(
                select(*keys, *values).group_by(*keys).having(values[0] != 0).order_by(*keys)
            )
            out[table.name] = [tuple(r) for r in rows]
    return out


def agree(index: MediaIndex) -> None:
    for rng in RANGES:
        from_rollups = analytics(index, rng).as_json()
        assert from_rollups == analytics(index, rng, rollups=False).as_json(), rng
    kept = tables(index)
    with index.begin() as conn:
        rebuild(conn)
    assert tables(index) == kept


def test_rollups_follow_inserts_status_changes_prices_outcomes_and_erasure(
    index: MediaIndex,
) -> None:
    seed(index.engine)
    first = analytics(index, RANGES[0])
    inside = [m for m in TRAFFIC.inbound if RANGES[0].since <= m.at.date() <= RANGES[0].until]
    assert first.totals["inbound"] == len(inside) > 0
    assert first.totals["outbound"] > 0 and first.media_by_kind
    agree(index)

    sends = OutboundIndex(index.engine, begin=index.begin)
    with index.engine.connect() as conn:
        queued = (
            conn.execute(
                select(outbound_messages.c.sid).where(
                    outbound_messages.c.status.in_(("queued", "sent")),
                    outbound_messages.c.sid.is_not(None),
                )
            )
            .scalars()
            .all()
        )
    assert queued
    for sid in queued:
        event = parse_status(
            [("MessageSid", sid), ("MessageStatus", "delivered"), ("AccountSid", ACCT)]
        )
        assert sends.record_status(event) == "delivered"
        sends.record_price(sid, -0.0083, "EUR")
    after = analytics(index, RANGES[0])
    assert after.funnel["delivered"] == first.funnel["delivered"] + len(queued)
    assert after.cost_unit == "EUR/USD"
    agree(index)

    with index.begin() as conn:
        # A media outcome (kind and size learned later), an erased message, a refused send.
        conn.execute(
            update(media).where(media.c.kind == "video").values(kind="image", size_bytes=10)
        )
        victim = conn.execute(select(messages.c.sid).limit(1)).scalar_one()
        conn.execute(delete(media).where(media.c.message_sid == victim))
        conn.execute(delete(messages).where(messages.c.sid == victim))
        conn.execute(
            update(outbound_messages).where(outbound_messages.c.sid == queued[0]).values(sid=None)
        )
    changed = analytics(index, RANGES[0])
    assert changed.totals["inbound"] == first.totals["inbound"] - 1
    assert "video" not in changed.media_by_kind
    assert changed.funnel["queued"] == after.funnel["queued"] - 1
    agree(index)


def test_an_older_index_is_rolled_up_once_at_start_up(index: MediaIndex) -> None:
    seed(index.engine)
    expected = analytics(index, RANGES[0]).as_json()
    with index.begin() as conn:
        for table in TABLES:
            conn.execute(delete(table))
        conn.execute(delete(meta).where(meta.c.key == BACKFILLED))
    assert analytics(index, RANGES[0]).totals["inbound"] == 0
    upgrade(index.engine)
    assert analytics(index, RANGES[0]).as_json() == expected
