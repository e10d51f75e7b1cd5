"""Reading the live rows (`live.py`) for the stream hubs, and the inbox's unread counts.

Kept apart from `live.py` because it joins the thread expressions of
`inbox.py`, which imports the message writers that call `live.write_live`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select
from sqlalchemy.engine import Connection, Engine

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.inbox import ThreadKey
from receiver.index.live import RETENTION, LiveCursor, LiveEvent
from receiver.index.schema import (
    live_events,
    media,
    messages,
    outbound_messages,
    thread_reads,
    utcnow,
)
from receiver.index.threads import SEPARATOR, customer_in, inbound_match, inbound_where, ours_in

#: Unread counts stop at this (the badge says "99+").
UNREAD_CAP = 100


def _after_statement() -> Any:
    ours = func.coalesce(
        ours_in(),
        func.coalesce(outbound_messages.c.messaging_service_sid, outbound_messages.c.from_addr),
    )
    customer = func.coalesce(customer_in(), outbound_messages.c.to_addr)
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
        .where(live_events.c.id > bindparam("after"))
        .order_by(live_events.c.id)
        .limit(bindparam("limit"))
    )
    return stmt


# Built once: the hub of each process runs it four times a second.
_AFTER = _after_statement()


class LiveFeed:
    """The live rows as each server process's stream hub reads them."""

    def __init__(
        self, engine: Engine, *, begin: Callable[[], AbstractContextManager[Connection]]
    ) -> None:
        self.engine = engine
        self._begin = begin
        #: Whether an id can become visible after a higher one (PostgreSQL: ids are drawn
        #: before commit); on SQLite writers are serialised and id order is commit order.
        self.gaps_fill_late = engine.dialect.name != "sqlite"

    @translate_db_errors
    def head(self) -> LiveCursor:
        """The position after the newest row (where a new stream starts)."""
        with self.engine.connect() as conn:
            newest = conn.execute(select(func.max(live_events.c.id))).scalar()
        return LiveCursor(int(newest or 0))

    @translate_db_errors
    def oldest(self) -> LiveCursor | None:
        """The position just before the oldest kept row (None: no rows)."""
        with self.engine.connect() as conn:
            first = conn.execute(select(func.min(live_events.c.id))).scalar()
        return LiveCursor(int(first) - 1) if first is not None else None

    @translate_db_errors
    def after(self, cursor: LiveCursor, limit: int = 500) -> list[LiveEvent]:
        """Rows after `cursor`, in order, with their thread and media facts."""
        with self.engine.connect() as conn:
            rows = conn.execute(_AFTER, {"after": cursor.id, "limit": limit}).mappings().all()
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
        cursor=LiveCursor(int(r["id"])),
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


def _unread_statement() -> Any:
    seen = (
        select(thread_reads.c.seen_at)
        .where(
            thread_reads.c.operator == bindparam("operator"),
            thread_reads.c.thread == bindparam("thread"),
        )
        .scalar_subquery()
    )
    newest = (
        select(messages.c.sid)
        .where(
            *inbound_match(bindparam("bare"), bindparam("customer"), bindparam("ours")),
            or_(seen.is_(None), messages.c.received_at > seen),
        )
        .limit(UNREAD_CAP)
        .subquery()
    )
    return select(func.count()).select_from(newest)


# Built once: building it per thread cost more than running it (~4 ms against ~0.1 ms).
_UNREAD = _unread_statement()


@translate_db_errors
def _unread_in_conversation(conn: Connection, operator: str, key: ThreadKey) -> int:
    """A conversation thread's unread count (its rows are found by conversation, not sender)."""
    seen = (
        select(thread_reads.c.seen_at)
        .where(thread_reads.c.operator == operator, thread_reads.c.thread == key.encode())
        .scalar_subquery()
    )
    newest = (
        select(messages.c.sid)
        .where(*inbound_where(key.ours, ""), or_(seen.is_(None), messages.c.received_at > seen))
        .limit(UNREAD_CAP)
        .subquery()
    )
    return int(conn.execute(select(func.count()).select_from(newest)).scalar_one())


def unread_counts(index: IndexCore, operator: str, keys: Sequence[ThreadKey]) -> dict[str, int]:
    """Inbound messages received after what `operator` has seen, per thread key (capped).

    One capped count per thread of the page, each found through
    `ix_messages_from_received`, on one connection.
    """
    out: dict[str, int] = {}
    with index.engine.connect() as conn:
        for key in keys:
            if key.conversation:
                out[key.encode()] = _unread_in_conversation(conn, operator, key)
                continue
            params = {
                "operator": operator,
                "thread": key.encode(),
                "bare": key.customer.rpartition(":")[2],
                "customer": key.customer,
                "ours": key.ours,
            }
            out[key.encode()] = int(conn.execute(_UNREAD, params).scalar_one())
    return out
