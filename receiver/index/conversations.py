"""Conversations, their participants and their messages' thread fields (SQLAlchemy Core).

The messages themselves (body, media, state) live in `messages`/`media`
like every inbound message; this part keeps what makes them a thread.
Every write is idempotent: Twilio retries webhooks and Event Streams
delivers at least once, in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from receiver.index.errors import translate_db_errors
from receiver.index.messages import with_media
from receiver.index.outbound import sources_for
from receiver.index.records import MessageRecord
from receiver.index.schema import (
    conversation_messages,
    conversation_participants,
    conversation_receipts,
    conversations,
    messages,
    opt_outs,
    utcnow,
)


@dataclass(frozen=True)
class ConversationRecord:
    """One row of `conversations`."""

    sid: str
    account_sid: str
    chat_service_sid: str | None
    messaging_service_sid: str | None
    friendly_name: str | None
    unique_name: str | None
    state: str | None
    attributes: str | None
    removed: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ReceiptRecord:
    """One participant's delivery receipt of a message, with the participant's address."""

    sid: str
    message_sid: str
    participant_sid: str | None
    address: str | None
    channel_message_sid: str | None
    status: str
    error_code: int | None
    updated_at: datetime


@dataclass(frozen=True)
class ParticipantRecord:
    """One row of `conversation_participants` (a messaging binding or a chat identity)."""

    sid: str
    conversation_sid: str
    identity: str | None
    address: str | None
    proxy_address: str | None
    projected_address: str | None
    removed: bool
    created_at: datetime
    updated_at: datetime


def opted_out_members(conn: Connection, sids: Sequence[str]) -> dict[str, list[str]]:
    """Each conversation's member addresses that opted out (replied STOP), by SID.

    A member counts as opted out of the conversation when its newest opt-out row
    for one of our sides of it (the members' proxy and projected addresses, the
    conversation's Messaging Service) or for every sender ("*") says so.
    """
    found: dict[str, list[str]] = {sid: [] for sid in sids}
    if not sids:
        return found
    people = conversation_participants
    members = conn.execute(
        select(
            people.c.conversation_sid,
            people.c.address,
            people.c.proxy_address,
            people.c.projected_address,
        ).where(people.c.conversation_sid.in_(list(sids)), people.c.removed.is_(False))
    ).all()
    services = dict(
        conn.execute(
            select(conversations.c.sid, conversations.c.messaging_service_sid).where(
                conversations.c.sid.in_(list(sids))
            )
        ).all()
    )
    senders: dict[str, set[str]] = {sid: {"*"} for sid in sids}
    addresses: dict[str, set[str]] = {sid: set() for sid in sids}
    for sid, address, proxy, projected in members:
        senders[sid].update(a for a in (proxy, projected) if a)
        if address:
            addresses[sid].add(address)
    for sid, service in services.items():
        if service:
            senders[sid].add(service)
    everyone = {a for group in addresses.values() for a in group}
    if not everyone:
        return found
    rows = conn.execute(
        select(opt_outs.c.address, opt_outs.c.sender, opt_outs.c.opted_out)
        .where(opt_outs.c.address.in_(everyone))
        .order_by(opt_outs.c.updated_at.desc())
    ).all()
    for sid in sids:
        for address in sorted(addresses[sid]):
            newest = next(
                (bool(o) for a, s, o in rows if a == address and s in senders[sid]), False
            )
            if newest:
                found[sid].append(address)
    return found


def labels(conn: Connection, sids: Sequence[str]) -> dict[str, tuple[str | None, list[str]]]:
    """Each conversation's friendly name and its members (address, else identity), by SID."""
    if not sids:
        return {}
    people = conversation_participants
    names = dict(
        conn.execute(
            select(conversations.c.sid, conversations.c.friendly_name).where(
                conversations.c.sid.in_(list(sids))
            )
        ).all()
    )
    out: dict[str, tuple[str | None, list[str]]] = {sid: (names.get(sid), []) for sid in sids}
    rows = conn.execute(
        select(people.c.conversation_sid, people.c.address, people.c.identity, people.c.sid)
        .where(people.c.conversation_sid.in_(list(sids)), people.c.removed.is_(False))
        .order_by(people.c.created_at, people.c.sid)
    ).all()
    for sid, address, identity, participant in rows:
        out[sid][1].append(address or identity or participant)
    return out


class ConversationIndex:
    """Conversations and participants; shares the index's engine and writer lock."""

    def __init__(
        self, engine: Engine, *, begin: Callable[[], AbstractContextManager[Connection]]
    ) -> None:
        self.engine = engine
        self._begin = begin

    def _insert(self, table: Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _upsert(self, table: Table, values: Mapping[str, Any], *, overwrite: bool) -> None:
        """Insert the row; on conflict, replace (overwrite) or fill in (not overwrite)
        the fields given as not None, so a placeholder never hides newer facts."""
        now = utcnow()
        stmt = self._insert(table).values(created_at=now, updated_at=now, **values)
        given = [k for k, v in values.items() if v is not None and k != "sid"]
        changes: dict[str, Any] = {
            k: stmt.excluded[k] if overwrite else func.coalesce(table.c[k], stmt.excluded[k])
            for k in given
        }
        if overwrite:
            changes["updated_at"] = now
        if changes:
            stmt = stmt.on_conflict_do_update(index_elements=["sid"], set_=changes)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["sid"])
        with self._begin() as conn:
            conn.execute(stmt)

    @translate_db_errors
    def save_conversation(self, values: Mapping[str, Any], *, overwrite: bool = True) -> None:
        """Record a conversation (`overwrite=False`: only fill in what is unknown)."""
        self._upsert(conversations, values, overwrite=overwrite)

    @translate_db_errors
    def save_participant(self, values: Mapping[str, Any]) -> None:
        """Record a participant and its binding addresses."""
        self._upsert(conversation_participants, values, overwrite=True)

    @translate_db_errors
    def mark_removed(self, kind: str, sid: str) -> bool:
        """Mark a conversation, participant or message removed (kept for the record)."""
        table = {
            "conversation": conversations,
            "participant": conversation_participants,
        }.get(kind)
        with self._begin() as conn:
            if table is None:
                stmt: Any = (
                    update(conversation_messages)
                    .where(conversation_messages.c.message_sid == sid)
                    .values(removed=True)
                )
            else:
                stmt = (
                    update(table)
                    .where(table.c.sid == sid)
                    .values(removed=True, updated_at=utcnow())
                )
            return bool(conn.execute(stmt).rowcount)

    @translate_db_errors
    def save_message(self, values: Mapping[str, Any]) -> None:
        """Record a message's thread fields once (a retry or a second path changes nothing)."""
        stmt = (
            self._insert(conversation_messages)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["message_sid"])
        )
        with self._begin() as conn:
            conn.execute(stmt)

    @translate_db_errors
    def update_message(self, sid: str, *, body: str | None, attributes: str | None) -> bool:
        """Apply an edit (onMessageUpdated) to a known message; False when unknown."""
        with self._begin() as conn:
            if attributes is not None:
                conn.execute(
                    update(conversation_messages)
                    .where(conversation_messages.c.message_sid == sid)
                    .values(attributes=attributes)
                )
            if body is None:
                return True
            done = conn.execute(
                update(messages).where(messages.c.sid == sid).values(body=body, updated_at=utcnow())
            )
            return bool(done.rowcount)

    @translate_db_errors
    def service_of(self, conversation_sid: str) -> str | None:
        """The Chat Service (IS…) of a known conversation, or None."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(conversations.c.chat_service_sid).where(
                    conversations.c.sid == conversation_sid
                )
            ).scalar()
        return str(value) if value else None

    @translate_db_errors
    def get(self, sid: str) -> ConversationRecord | None:
        """One conversation, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(conversations).where(conversations.c.sid == sid)).mappings()
            found = row.first()
        return ConversationRecord(**found) if found else None

    @translate_db_errors
    def recent(self, limit: int = 100) -> list[ConversationRecord]:
        """Conversations, most recently updated first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(conversations)
                .order_by(conversations.c.updated_at.desc(), conversations.c.sid)
                .limit(limit)
            ).mappings()
            return [ConversationRecord(**r) for r in rows]

    @translate_db_errors
    def participants(self, conversation_sid: str) -> list[ParticipantRecord]:
        """The participants of a conversation that were not removed, oldest first."""
        table = conversation_participants
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table)
                .where(table.c.conversation_sid == conversation_sid, table.c.removed.is_(False))
                .order_by(table.c.created_at, table.c.sid)
            ).mappings()
            return [ParticipantRecord(**r) for r in rows]

    @translate_db_errors
    def opted_out_members(self, conversation_sid: str) -> list[str]:
        """The member addresses of a conversation that opted out (see `opted_out_members`)."""
        with self.engine.connect() as conn:
            return opted_out_members(conn, [conversation_sid])[conversation_sid]

    @translate_db_errors
    def message_sids(self, conversation_sid: str) -> list[str]:
        """The conversation's message SIDs (not removed) in ascending `Index` order."""
        table = conversation_messages
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.message_sid)
                .where(table.c.conversation_sid == conversation_sid, table.c.removed.is_(False))
                .order_by(table.c.idx, table.c.message_sid)
            )
            return [str(r[0]) for r in rows]

    @translate_db_errors
    def thread(self, conversation_sid: str, limit: int = 1000) -> list[MessageRecord]:
        """The conversation's messages (not removed) with their media, ascending `Index`."""
        table = conversation_messages
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(messages)
                    .join(table, table.c.message_sid == messages.c.sid)
                    .where(table.c.conversation_sid == conversation_sid, table.c.removed.is_(False))
                    .order_by(table.c.idx, messages.c.received_at, messages.c.sid)
                    .limit(limit)
                )
                .mappings()
                .all()
            )
            return with_media(conn, rows)

    @translate_db_errors
    def save_receipt(self, values: Mapping[str, Any]) -> str | None:
        """Record a delivery receipt; its status only moves forward (a late `sent` after
        `delivered` changes nothing). The receipt's status afterwards."""
        table = conversation_receipts
        now = utcnow()
        status = str(values["status"])
        with self._begin() as conn:
            inserted = conn.execute(
                self._insert(table)
                .values(updated_at=now, **values)
                .on_conflict_do_nothing(index_elements=["sid"])
                .returning(table.c.sid)
            ).first()
            if inserted is None:
                conn.execute(
                    update(table)
                    .where(table.c.sid == values["sid"], table.c.status.in_(sources_for(status)))
                    .values(
                        status=status,
                        error_code=values.get("error_code"),
                        channel_message_sid=func.coalesce(
                            values.get("channel_message_sid"), table.c.channel_message_sid
                        ),
                        updated_at=now,
                    )
                )
            found = conn.execute(select(table.c.status).where(table.c.sid == values["sid"]))
            return found.scalar()

    @translate_db_errors
    def receipts(self, message_sids: Sequence[str]) -> dict[str, list[ReceiptRecord]]:
        """Each message's receipts, one per participant (address when known), by SID."""
        table, people = conversation_receipts, conversation_participants
        out: dict[str, list[ReceiptRecord]] = {sid: [] for sid in message_sids}
        if not message_sids:
            return out
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    table.c.sid,
                    table.c.message_sid,
                    table.c.participant_sid,
                    people.c.address,
                    table.c.channel_message_sid,
                    table.c.status,
                    table.c.error_code,
                    table.c.updated_at,
                )
                .outerjoin(people, people.c.sid == table.c.participant_sid)
                .where(table.c.message_sid.in_(list(message_sids)))
                .order_by(table.c.message_sid, people.c.address, table.c.sid)
            ).mappings()
            for row in rows:
                out[row["message_sid"]].append(ReceiptRecord(**row))
        return out
