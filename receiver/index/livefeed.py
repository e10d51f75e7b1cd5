"""Reading the live rows (`live.py`) for the stream hubs, and the inbox's unread counts.

Kept apart from `live.py` because it joins the thread expressions of
`inbox.py`, which imports the message writers that call `live.write_live`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Text, and_, cast, delete, func, literal, select, tuple_
from sqlalchemy.engine import Connection, Engine

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.inbox import SEPARATOR, ThreadKey, _customer_in, _inbound_of, _ours_in
from receiver.index.live import RETENTION, LiveCursor, LiveEvent
from receiver.index.schema import (
    live_events,
    media,
    messages,
    outbound_messages,
    thread_reads,
    utcnow,
)

#: Unread counts stop at this (the badge says "99+").
UNREAD_CAP = 100


def _visible(conn: Connection) -> Any:
    # Rows of transactions older than every running one: no earlier row can still appear.
    if conn.dialect.name != "postgresql":
        return literal(True)
    xmin = cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger)
    return live_events.c.txid < xmin


def _after(cursor: LiveCursor) -> Any:
    return tuple_(live_events.c.txid, live_events.c.id) > tuple_(
        literal(cursor.txid), literal(cursor.id)
    )


class LiveFeed:
    """The live rows as each server process's stream hub reads them."""

    def __init__(
        self, engine: Engine, *, begin: Callable[[], AbstractContextManager[Connection]]
    ) -> None:
        self.engine = engine
        self._begin = begin

    @translate_db_errors
    def head(self) -> LiveCursor:
        """The position after the newest row readable now (where a new stream starts)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(live_events.c.txid, live_events.c.id)
                .where(_visible(conn))
                .order_by(live_events.c.txid.desc(), live_events.c.id.desc())
                .limit(1)
            ).first()
        return LiveCursor(int(row[0]), int(row[1])) if row else LiveCursor()

    @translate_db_errors
    def oldest(self) -> LiveCursor | None:
        """The position just before the oldest kept row (None: no rows)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(live_events.c.txid, live_events.c.id)
                .order_by(live_events.c.txid, live_events.c.id)
                .limit(1)
            ).first()
        return LiveCursor(int(row[0]), int(row[1]) - 1) if row else None

    @translate_db_errors
    def after(self, cursor: LiveCursor, limit: int = 500) -> list[LiveEvent]:
        """Readable rows after `cursor`, in order, with their thread and media facts."""
        ours = func.coalesce(
            _ours_in(),
            func.coalesce(outbound_messages.c.messaging_service_sid, outbound_messages.c.from_addr),
        )
        customer = func.coalesce(_customer_in(), outbound_messages.c.to_addr)
        sid = func.coalesce(live_events.c.message_sid, media.c.message_sid)
        stmt = (
            select(
                live_events,
                sid.label("sid"),
                ours.label("ours"),
                customer.label("customer"),
                messages.c.sid.label("inbound_sid"),
                media.c.thumbnail_key,
                media.c.state.label("media_state"),
                outbound_messages.c.error_code,
            )
            .select_from(
                # A thumbnail row names only its media item: the item names the message.
                live_events.outerjoin(media, media.c.id == live_events.c.media_id)
                .outerjoin(messages, messages.c.sid == sid)
                .outerjoin(outbound_messages, outbound_messages.c.sid == live_events.c.message_sid)
            )
            .order_by(live_events.c.txid, live_events.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.where(_after(cursor), _visible(conn))).mappings().all()
        return [_event(r) for r in rows]

    @translate_db_errors
    def prune(self, now: datetime | None = None) -> int:
        """Delete rows older than RETENTION; how many."""
        cutoff = (now or utcnow()) - RETENTION
        with self._begin() as conn:
            result = conn.execute(delete(live_events).where(live_events.c.created_at < cutoff))
        return int(result.rowcount or 0)


def _event(r: Mapping[Any, Any]) -> LiveEvent:
    thread = f"{r['ours']}{SEPARATOR}{r['customer']}" if r["ours"] and r["customer"] else None
    return LiveEvent(
        cursor=LiveCursor(int(r["txid"]), int(r["id"])),
        type=r["type"],
        message_sid=r["sid"],
        thread=thread,
        direction="inbound" if r["inbound_sid"] else ("outbound" if thread else None),
        media_id=r["media_id"],
        thumbnail=r["thumbnail_key"] is not None,
        media_state=r["media_state"],
        status=r["status"],
        error_code=r["error_code"] if r["status"] is not None else None,
    )


# -- unread counts ---------------------------------------------------------------


@translate_db_errors
def mark_seen(index: IndexCore, operator: str, key: ThreadKey, seen_at: datetime) -> None:
    """Record that `operator` has seen `key` up to `seen_at` (never moves backwards)."""
    now = utcnow()
    stmt = index._insert(thread_reads).values(
        operator=operator, thread=key.encode(), seen_at=seen_at, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[thread_reads.c.operator, thread_reads.c.thread],
        set_={"seen_at": stmt.excluded.seen_at, "updated_at": stmt.excluded.updated_at},
        where=thread_reads.c.seen_at < stmt.excluded.seen_at,
    )
    with index.engine.connect() as conn:
        current = conn.execute(
            select(thread_reads.c.seen_at).where(
                thread_reads.c.operator == operator, thread_reads.c.thread == key.encode()
            )
        ).scalar()
    if current is not None and current >= seen_at:
        return  # a page view costs a read, not a write, when nothing new was seen
    with index.begin() as conn:
        conn.execute(stmt)


@translate_db_errors
def unread_counts(index: IndexCore, operator: str, keys: Sequence[ThreadKey]) -> dict[str, int]:
    """Inbound messages received after what `operator` has seen, per thread key (capped)."""
    if not keys:
        return {}
    out: dict[str, int] = {}
    with index.engine.connect() as conn:
        seen = dict(
            conn.execute(
                select(thread_reads.c.thread, thread_reads.c.seen_at).where(
                    thread_reads.c.operator == operator,
                    thread_reads.c.thread.in_([k.encode() for k in keys]),
                )
            ).all()
        )
        for key in keys:
            cond = list(_inbound_of(key))
            since = seen.get(key.encode())
            if since is not None:
                cond.append(messages.c.received_at > since)
            # Each thread finds its rows through ix_messages_from_received; LIMIT caps the count.
            newest = select(messages.c.sid).where(and_(*cond)).limit(UNREAD_CAP).subquery()
            out[key.encode()] = int(
                conn.execute(select(func.count()).select_from(newest)).scalar_one()
            )
    return out
