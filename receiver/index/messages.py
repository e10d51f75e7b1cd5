"""Inbound messages and their media rows: record once, read, page through, delete."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.engine import Connection

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.events import NewEvent, delete_events_of, write_events
from receiver.index.playable import delete_playable_of
from receiver.index.records import MediaItem, MessageRecord
from receiver.index.schema import media, messages, utcnow
from receiver.index.serialize import message_event_data
from receiver.index.texts import select_media
from receiver.index.threads import inbound_key, refresh, touch_inbound

_INSERT_MEDIA_RETURNING = media.insert().returning(*media.c, sort_by_parameter_order=True)


def with_media(conn: Connection, rows: Sequence[Mapping[Any, Any]]) -> list[MessageRecord]:
    """Message rows as records with their media items (index order), with one query per 500."""
    by_sid: dict[str, list[MediaItem]] = {r["sid"]: [] for r in rows}
    sids = list(by_sid)
    for start in range(0, len(sids), 500):
        found = conn.execute(
            select_media()
            .where(media.c.message_sid.in_(sids[start : start + 500]))
            .order_by(media.c.message_sid, media.c.idx)
        ).mappings()
        for m in found:
            by_sid[m["message_sid"]].append(MediaItem.from_row(m))
    return [MessageRecord.from_row(row, by_sid[row["sid"]]) for row in rows]


def _received_between(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    cond: list[ColumnElement[bool]] = []
    if since is not None:
        cond.append(messages.c.received_at >= since)
    if until is not None:
        cond.append(messages.c.received_at < until)
    return cond


class Messages(IndexCore):
    """Inbound messages and their media rows."""

    def _prepare(self) -> None:
        super()._prepare()
        # Statements of the webhook path are built once: SQLAlchemy then only
        # binds parameters (values passed at execute time, not baked in).
        self._insert_message = (
            self._insert(messages)
            .on_conflict_do_nothing(index_elements=["sid"])
            .returning(messages.c.sid)
        )

    def record_message(
        self,
        row: Mapping[str, Any],
        media_rows: Iterable[Mapping[str, Any]],
        *,
        lease_owner: str | None = None,
        lease_seconds: float = 0,
    ) -> bool:
        """Insert a message and its media rows once; False when the MessageSid was known."""
        inserted = self.insert_message(
            row, media_rows, lease_owner=lease_owner, lease_seconds=lease_seconds
        )
        return inserted is not None

    @translate_db_errors
    def insert_message(
        self,
        row: Mapping[str, Any],
        media_rows: Iterable[Mapping[str, Any]],
        *,
        lease_owner: str | None = None,
        lease_seconds: float = 0,
    ) -> list[MediaItem] | None:
        """Insert a message and its media rows once; the media items as stored, or
        None when the MessageSid was known.

        The message insert is `ON CONFLICT DO NOTHING`, and media rows are only
        written by the transaction whose insert took effect, so concurrent
        deliveries of one MessageSid leave one message and one row per item.
        """
        now = utcnow()
        values = {"received_at": now, "updated_at": now, **row}
        media_list = list(media_rows)
        # The caller processing the message inline leases its items in the
        # same transaction, saving a claim round trip on the hot path.
        lease: dict[str, Any] = {}
        if lease_owner is not None:
            lease = {
                "lease_owner": lease_owner,
                "lease_expires_at": now + timedelta(seconds=lease_seconds),
                "attempts": 1,
            }
        if not media_list:
            values["state"] = "complete"

        due = 0

        def insert(conn: Connection) -> list[MediaItem] | None:
            nonlocal due
            if conn.execute(self._insert_message, values).first() is None:
                return None
            touch_inbound(conn, values)
            if not media_list:
                # No media: received and completed at once, in this transaction.
                data = message_event_data(values, [])
                due = write_events(
                    conn,
                    [
                        NewEvent("message.received", data, values["sid"]),
                        NewEvent("message.completed", data, values["sid"]),
                    ],
                    now,
                )
                return []
            # RETURNING hands back the rows (with their ids) that a read
            # right after would fetch, one query fewer per webhook.
            stored = conn.execute(
                _INSERT_MEDIA_RETURNING,
                [
                    {
                        "created_at": now,
                        "updated_at": now,
                        "state": "pending",
                        "attempts": 0,
                        "message_sid": values["sid"],
                        **lease,
                        **m,
                    }
                    for m in media_list
                ],
            )
            items = [MediaItem.from_row(r) for r in stored.mappings()]
            data = message_event_data(values, items)
            due = write_events(conn, [NewEvent("message.received", data, values["sid"])], now)
            return items

        # Webhooks arriving together share a commit with each other and with
        # item outcomes; each still returns only once its own insert is durable.
        inserted = self._writes.run(insert)
        self.notify_events(due)
        return inserted

    @translate_db_errors
    def account_of(self, sid: str) -> str | None:
        """The AccountSid of message `sid`, or None when there is no such message."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(messages.c.account_sid).where(messages.c.sid == sid)
            ).first()
        return None if found is None else str(found[0])

    @translate_db_errors
    def get_message(self, sid: str) -> MessageRecord | None:
        """One message with its media items (in index order), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(messages).where(messages.c.sid == sid)).mappings().first()
            if row is None:
                return None
            items = conn.execute(
                select_media().where(media.c.message_sid == sid).order_by(media.c.idx)
            ).mappings()
            return MessageRecord.from_row(row, (MediaItem.from_row(m) for m in items))

    @translate_db_errors
    def get_media(self, media_id: int) -> MediaItem | None:
        """One media item by id, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select_media().where(media.c.id == media_id)).mappings().first()
        return MediaItem.from_row(row) if row else None

    @translate_db_errors
    def channel_of(self, sid: str) -> str | None:
        """The channel message `sid` came from (sms, whatsapp, …), or None when unknown."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(messages.c.from_channel).where(messages.c.sid == sid)
            ).first()
        return None if found is None or found[0] is None else str(found[0])

    @translate_db_errors
    def media_of(self, sid: str) -> list[MediaItem]:
        """Media items of one message in index order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(media).where(media.c.message_sid == sid).order_by(media.c.idx)
            ).mappings()
            return [MediaItem.from_row(r) for r in rows]

    @translate_db_errors
    def delete_message(self, sid: str) -> bool:
        """Delete a message row, its media rows and its events (objects must be deleted first)."""
        with self.begin() as conn:
            row = conn.execute(select(messages).where(messages.c.sid == sid)).mappings().first()
            delete_events_of(conn, sid)
            delete_playable_of(conn, sid)
            conn.execute(delete(media).where(media.c.message_sid == sid))
            result = conn.execute(delete(messages).where(messages.c.sid == sid))
            if row is not None:
                refresh(conn, inbound_key(row))
            return bool(result.rowcount)

    @translate_db_errors
    def count_messages(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> int:
        """How many messages were received in [since, until)."""
        stmt = select(func.count()).select_from(messages)
        cond = _received_between(since, until)
        if cond:
            stmt = stmt.where(*cond)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one() or 0)

    @translate_db_errors
    def messages_after(
        self,
        after: tuple[datetime, str] | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 500,
    ) -> list[MessageRecord]:
        """Up to `limit` messages received in [since, until), oldest first, with their
        media, that sort after `after` (the (received_at, sid) of the last one seen).

        A keyset rather than an offset: rows deleted or added while the caller
        works never make a page repeat or skip a message.
        """
        cond = _received_between(since, until)
        if after is not None:
            at, sid = after
            cond.append(
                or_(
                    messages.c.received_at > at,
                    and_(messages.c.received_at == at, messages.c.sid > sid),
                )
            )
        stmt = (
            select(messages)
            .where(*cond)
            .order_by(messages.c.received_at, messages.c.sid)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
            return with_media(conn, rows)
