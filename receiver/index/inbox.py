"""Threads of the inbox: one per customer address and one of our senders.

A thread's key is ``<ours>~<customer>``: `ours` is the Messaging Service SID
when the message went through one, else our phone number (or channel
address), and `customer` the other side. "~" occurs in neither, so the key is
also a URL path segment. A Conversations conversation is a thread keyed by
its ``CH...`` SID (no "~"): `ThreadKey(ours=<CH...>, customer="")`, listed
with its friendly name (else its members), its messages by author.

The list reads `thread_summary` (kept by `receiver.index.threads` in each
message's own transaction), newest activity first, paged with a keyset cursor
on (last activity, key) like the message list. A thread's page reads its
messages through the sender and recipient indexes.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from receiver.index.conversations import labels, opted_out_members
from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.messages import with_media
from receiver.index.queries import (
    DEFAULT_LIMIT,
    EPOCH,
    Cursor,
    InvalidParameter,
    Page,
    _after,
)
from receiver.index.records import MessageRecord
from receiver.index.schema import messages, opt_outs, outbound_messages, thread_summary
from receiver.index.threads import (
    SEPARATOR,
    inbound_where,
    is_conversation_key,
    outbound_where,
)

MAX_KEY_LENGTH = 600


@dataclass(frozen=True)
class ThreadKey:
    """Our side (number or MG SID) and the customer's address; or a conversation
    (`ours` its CH… SID, `customer` empty)."""

    ours: str
    customer: str = ""

    @property
    def conversation(self) -> str | None:
        """The conversation's SID when this thread is one, else None."""
        return None if self.customer else self.ours

    def encode(self) -> str:
        return self.ours if not self.customer else f"{self.ours}{SEPARATOR}{self.customer}"

    @classmethod
    def decode(cls, raw: str) -> ThreadKey | None:
        """The key of `raw`, or None when it is not a thread key."""
        if is_conversation_key(raw):
            return cls(raw)
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
    #: A conversation's friendly name (None otherwise, or when it has none).
    title: str | None = None
    #: A conversation's members (address, else identity).
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One message of a thread page: inbound (a record with media) or outbound (a row)."""

    at: datetime
    inbound: MessageRecord | None = None
    outbound: dict[str, Any] | None = None


@translate_db_errors
def list_threads(
    index: IndexCore, *, cursor: Cursor | None = None, limit: int = DEFAULT_LIMIT
) -> Page[Thread]:
    """Threads, newest activity first, after `cursor` (its key is the thread key).

    One indexed read of `thread_summary` joined with each row's last message,
    then one query for the inbound ones' media and one for the opt-outs.
    """
    t = thread_summary.c
    stmt = (
        select(thread_summary, *_LAST_IN, *_LAST_OUT)
        .select_from(
            thread_summary.outerjoin(messages, messages.c.sid == t.last_sid).outerjoin(
                outbound_messages, outbound_messages.c.id == t.last_outbound_id
            )
        )
        .where(_after(t.last_at, t.key, cursor, index.dialect))
        .order_by(t.last_at.desc(), t.key.desc())
        .limit(limit + 1)
    )
    with index.engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
        more = len(rows) > limit
        rows = rows[:limit]
        keys = [_key_of(r["key"]) for r in rows]
        inbound = {
            m.sid: m
            for m in with_media(
                conn,
                [
                    {c.name: r[f"in_{c.name}"] for c in messages.c}
                    for r in rows
                    if r["in_sid"] is not None
                ],
            )
        }
        opted = _opted_out_many(conn, [k for k in keys if not k.conversation])
        sids = [k.ours for k in keys if k.conversation]
        named = labels(conn, sids)
        opted.update(
            (ThreadKey(sid), bool(found)) for sid, found in opted_out_members(conn, sids).items()
        )
    threads = [
        Thread(
            key=key,
            last_at=r["last_at"],
            inbound=int(r["inbound"]),
            outbound=int(r["outbound"]),
            last=(
                inbound.get(r["in_sid"])
                if r["in_sid"] is not None
                else {c.name: r[f"out_{c.name}"] for c in outbound_messages.c}
                if r["out_id"] is not None
                else None
            ),
            opted_out=opted.get(key, False),
            title=named[key.ours][0] if key.ours in named else None,
            members=tuple(named[key.ours][1]) if key.ours in named else (),
        )
        for key, r in zip(keys, rows, strict=True)
    ]
    last = threads[-1] if more and threads else None
    return Page(threads, Cursor(last.last_at, last.key.encode()) if last else None)


# The last message's columns, apart from the summary's own.
_LAST_IN = [c.label(f"in_{c.name}") for c in messages.c]
_LAST_OUT = [c.label(f"out_{c.name}") for c in outbound_messages.c]


def _key_of(raw: str) -> ThreadKey:
    # Rows are keyed by the same rule; an address holding "~" still splits at the first one.
    if is_conversation_key(raw):
        return ThreadKey(raw)
    ours, _, customer = raw.partition(SEPARATOR)
    return ThreadKey(ours, customer)


def _opted_out_many(conn: Any, keys: list[ThreadKey]) -> dict[ThreadKey, bool]:
    """`_opted_out` of many threads with one query (the newest matching row decides)."""
    if not keys:
        return {}
    rows = conn.execute(
        select(opt_outs.c.address, opt_outs.c.sender, opt_outs.c.opted_out, opt_outs.c.updated_at)
        .where(opt_outs.c.address.in_({k.customer for k in keys}))
        .order_by(opt_outs.c.updated_at.desc())
    ).all()
    found: dict[ThreadKey, bool] = {}
    for key in keys:
        for address, sender, opted_out, _at in rows:
            if address == key.customer and sender in (key.ours, "*"):
                found[key] = bool(opted_out)
                break
    return found


@translate_db_errors
def thread_entries(index: IndexCore, key: ThreadKey, *, limit: int = 200) -> list[Entry]:
    """The newest `limit` messages of a thread, oldest first, inbound with their media."""
    with index.engine.connect() as conn:
        return _newest(conn, key, limit)


def inbound_of(key: ThreadKey) -> list[Any]:
    """Conditions selecting a thread's inbound message rows."""
    return inbound_where(key.ours, key.customer)


def _newest(conn: Any, key: ThreadKey, limit: int) -> list[Entry]:
    inbound = (
        conn.execute(
            select(messages)
            .where(*inbound_of(key))
            .order_by(messages.c.received_at.desc(), messages.c.sid.desc())
            .limit(limit)
        )
        .mappings()
        .all()
    )
    outbound = (
        conn.execute(
            select(outbound_messages)
            .where(*outbound_where(key.ours, key.customer))
            .order_by(outbound_messages.c.created_at.desc(), outbound_messages.c.id.desc())
            .limit(limit)
        )
        .mappings()
        .all()
    )
    # A message we sent into a conversation may come back as its own onMessageAdded:
    # it is shown once, as ours.
    sent = {r["sid"] for r in outbound if r["sid"]} if key.conversation else set()
    inbound = [r for r in inbound if r["sid"] not in sent]
    entries = [Entry(r.received_at, inbound=r) for r in with_media(conn, inbound)]
    entries += [Entry(r["created_at"], outbound=dict(r)) for r in outbound]
    entries.sort(key=lambda e: e.at)
    return entries[-limit:]


@translate_db_errors
def thread_opted_out(index: IndexCore, key: ThreadKey) -> bool:
    """Whether the customer opted out of our side of the thread (or of every sender)."""
    with index.engine.connect() as conn:
        return _opted_out(conn, key)


def _opted_out(conn: Any, key: ThreadKey) -> bool:
    if key.conversation:
        return bool(opted_out_members(conn, [key.ours])[key.ours])
    row = conn.execute(
        select(opt_outs.c.opted_out)
        .where(opt_outs.c.address == key.customer, opt_outs.c.sender.in_([key.ours, "*"]))
        .order_by(opt_outs.c.updated_at.desc())
        .limit(1)
    ).first()
    return bool(row and row[0])
