"""Threads of the inbox: one per customer address and one of our senders.

A thread's key is ``<ours>~<customer>``: `ours` is the Messaging Service SID
when the message went through one, else our phone number (or channel
address), and `customer` the other side. "~" occurs in neither, so the key is
also a URL path segment. A Conversations conversation will be a thread keyed
by its ``CH...`` SID (no "~"), without changing these keys.

Threads are derived from `messages` (inbound) and `outbound_messages` with
one GROUP BY per page, newest activity first, paged with a keyset cursor on
(last activity, key) like the message list.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select, union_all

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.messages import with_media
from receiver.index.queries import DEFAULT_LIMIT, EPOCH, Cursor, InvalidParameter, Page
from receiver.index.records import MessageRecord
from receiver.index.schema import messages, opt_outs, outbound_messages

SEPARATOR = "~"
MAX_KEY_LENGTH = 520


@dataclass(frozen=True)
class ThreadKey:
    """Our side (number or MG SID) and the customer's address."""

    ours: str
    customer: str

    def encode(self) -> str:
        return f"{self.ours}{SEPARATOR}{self.customer}"

    @classmethod
    def decode(cls, raw: str) -> ThreadKey | None:
        """The key of `raw`, or None when it is not a thread key."""
        if len(raw) > MAX_KEY_LENGTH or raw.count(SEPARATOR) != 1 or "\x00" in raw:
            return None
        ours, _, customer = raw.partition(SEPARATOR)
        return cls(ours, customer) if ours and customer else None


def encode_cursor(cursor: Cursor) -> str:
    """A thread-list cursor as a URL-safe token (the key in base64url: it holds "+" and "~")."""
    micros, _, key = cursor.encode().partition("-")
    token = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    return f"{micros}-{token}"


def decode_cursor(raw: str | None) -> Cursor | None:
    """The cursor of `encode_cursor`, None for the first page; InvalidParameter otherwise."""
    if not raw:
        return None
    match = re.fullmatch(r"([0-9]{1,16})-([A-Za-z0-9_-]{1,800})", raw)
    try:
        if match is None:
            raise ValueError(raw)
        padded = match[2] + "=" * (-len(match[2]) % 4)
        key = base64.urlsafe_b64decode(padded).decode()
    except ValueError:
        raise InvalidParameter(
            "cursor", "cursor is malformed; use the link of a previous page"
        ) from None
    return Cursor(EPOCH + timedelta(microseconds=int(match[1])), key)


@dataclass(frozen=True)
class Thread:
    """One inbox row: the thread, its last activity and last message, its opt-out state."""

    key: ThreadKey
    last_at: datetime
    inbound: int
    outbound: int
    last: MessageRecord | dict[str, Any] | None
    opted_out: bool


@dataclass(frozen=True)
class Entry:
    """One message of a thread page: inbound (a record with media) or outbound (a row)."""

    at: datetime
    inbound: MessageRecord | None = None
    outbound: dict[str, Any] | None = None


def _address(channel: Any, address: Any) -> Any:
    # Inbound rows keep the channel apart ("whatsapp", "+1555..."); outbound rows keep
    # Twilio's form ("whatsapp:+1555..."); SMS addresses have no prefix.
    return case((channel == "sms", address), else_=channel + ":" + address)


def _customer_in() -> Any:
    return _address(messages.c.from_channel, messages.c.from_addr)


def _ours_in() -> Any:
    return func.coalesce(
        messages.c.messaging_service_sid, _address(messages.c.to_channel, messages.c.to_addr)
    )


def _inbound_of(key: ThreadKey) -> list[Any]:
    return _inbound_match(key.customer.rpartition(":")[2], key.customer, key.ours)


def _inbound_match(bare: Any, customer: Any, ours: Any) -> list[Any]:
    """A thread's inbound rows, from values or bound parameters (statements built once)."""
    # The bare sender address first: `ix_messages_from_received` finds the thread's rows.
    return [messages.c.from_addr == bare, _customer_in() == customer, _ours_in() == ours]


def _ours_out() -> Any:
    return func.coalesce(outbound_messages.c.messaging_service_sid, outbound_messages.c.from_addr)


def _activity() -> Any:
    inbound = select(
        _ours_in().label("ours"),
        _customer_in().label("customer"),
        messages.c.received_at.label("at"),
        literal(1).label("inbound"),
        literal(0).label("outbound"),
    )
    outbound = select(
        _ours_out().label("ours"),
        outbound_messages.c.to_addr.label("customer"),
        outbound_messages.c.created_at.label("at"),
        literal(0).label("inbound"),
        literal(1).label("outbound"),
    ).where(_ours_out().is_not(None))
    return union_all(inbound, outbound).subquery("activity")


@translate_db_errors
def list_threads(
    index: IndexCore, *, cursor: Cursor | None = None, limit: int = DEFAULT_LIMIT
) -> Page[Thread]:
    """Threads, newest activity first, after `cursor` (its key is the thread key)."""
    act = _activity()
    last_at = func.max(act.c.at).label("last_at")
    key = (act.c.ours + SEPARATOR + act.c.customer).label("key")
    stmt = (
        select(
            act.c.ours,
            act.c.customer,
            last_at,
            func.sum(act.c.inbound).label("n_in"),
            func.sum(act.c.outbound).label("n_out"),
        )
        .group_by(act.c.ours, act.c.customer)
        .order_by(last_at.desc(), key.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        stmt = stmt.having(or_(last_at < cursor.at, and_(last_at == cursor.at, key < cursor.key)))
    with index.engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
        more = len(rows) > limit
        rows = rows[:limit]
        threads = [
            Thread(
                key=ThreadKey(r["ours"], r["customer"]),
                last_at=_aware(r["last_at"]),
                inbound=int(r["n_in"]),
                outbound=int(r["n_out"]),
                last=_last_message(conn, ThreadKey(r["ours"], r["customer"])),
                opted_out=_opted_out(conn, ThreadKey(r["ours"], r["customer"])),
            )
            for r in rows
        ]
    last = threads[-1] if more and threads else None
    return Page(threads, Cursor(last.last_at, last.key.encode()) if last else None)


@translate_db_errors
def thread_entries(index: IndexCore, key: ThreadKey, *, limit: int = 200) -> list[Entry]:
    """The newest `limit` messages of a thread, oldest first, inbound with their media."""
    with index.engine.connect() as conn:
        return _newest(conn, key, limit)


def _newest(conn: Any, key: ThreadKey, limit: int) -> list[Entry]:
    inbound = (
        conn.execute(
            select(messages)
            .where(*_inbound_of(key))
            .order_by(messages.c.received_at.desc(), messages.c.sid.desc())
            .limit(limit)
        )
        .mappings()
        .all()
    )
    outbound = (
        conn.execute(
            select(outbound_messages)
            .where(_ours_out() == key.ours, outbound_messages.c.to_addr == key.customer)
            .order_by(outbound_messages.c.created_at.desc(), outbound_messages.c.id.desc())
            .limit(limit)
        )
        .mappings()
        .all()
    )
    entries = [Entry(r.received_at, inbound=r) for r in with_media(conn, inbound)]
    entries += [Entry(_aware(r["created_at"]), outbound=dict(r)) for r in outbound]
    entries.sort(key=lambda e: e.at)
    return entries[-limit:]


@translate_db_errors
def thread_opted_out(index: IndexCore, key: ThreadKey) -> bool:
    """Whether the customer opted out of our side of the thread (or of every sender)."""
    with index.engine.connect() as conn:
        return _opted_out(conn, key)


def _opted_out(conn: Any, key: ThreadKey) -> bool:
    row = conn.execute(
        select(opt_outs.c.opted_out)
        .where(opt_outs.c.address == key.customer, opt_outs.c.sender.in_([key.ours, "*"]))
        .order_by(opt_outs.c.updated_at.desc())
        .limit(1)
    ).first()
    return bool(row and row[0])


def _last_message(conn: Any, key: ThreadKey) -> MessageRecord | dict[str, Any] | None:
    newest = _newest(conn, key, 1)
    return (newest[0].inbound or newest[0].outbound) if newest else None


def _aware(value: Any) -> datetime:
    # MAX() over the UTCDateTime union column comes back through the same type.
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
