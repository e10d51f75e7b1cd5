"""The media work queue: atomic claims, leases, outcomes, retries, thumbnails and
remote deletions due.

Claims are atomic: on PostgreSQL with `FOR UPDATE SKIP LOCKED`, on SQLite
with one `UPDATE ... RETURNING` statement (SQLite serialises writers), so two
processes never work on the same item at the same time, and a crashed
process's lease simply expires.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.events import NewEvent, write_events
from receiver.index.live import THUMBNAIL, live_rows, write_live
from receiver.index.records import MediaItem
from receiver.index.schema import media, messages, utcnow
from receiver.index.serialize import media_event_data, message_event_data

FINAL_MEDIA_STATES = ("stored", "rejected")
WORK_STATES = ("pending", "failed")


def _media_of_message_where(*conditions: Any) -> Any:
    return exists().where(media.c.message_sid == bindparam("_sid"), *conditions)


def _states(*names: str) -> list[Any]:
    """Our own state names as SQL literals: a plain IN list compiles once, where
    bound values would be expanded again on every execution."""
    return [literal_column(f"'{name}'") for name in names]


_FINAL = _states(*FINAL_MEDIA_STATES)
_FINAL_OR_FAILED = _states(*FINAL_MEDIA_STATES, "failed")

# A message is complete once every item is final, incomplete once the rest
# have failed, else pending; one statement, so the writer lock is held briefly.
_REFRESH_MESSAGE_STATE = (
    update(messages)
    .where(messages.c.sid == bindparam("_sid"))
    .values(
        state=case(
            (~_media_of_message_where(media.c.state.not_in(_FINAL)), "complete"),
            (
                and_(
                    _media_of_message_where(media.c.state == "failed"),
                    ~_media_of_message_where(media.c.state.not_in(_FINAL_OR_FAILED)),
                ),
                "incomplete",
            ),
            else_="pending",
        ),
        updated_at=bindparam("_now", type_=messages.c.updated_at.type),
    )
    # The row as written: the completion event's message, with no read after.
    .returning(*messages.c)
)


# Built once (constructing a statement per call costs more than running it).
_MEDIA_OF_MESSAGE = (
    select(media).where(media.c.message_sid == bindparam("_sid")).order_by(media.c.idx)
)


@lru_cache(maxsize=32)
def _finish_statement(columns: tuple[str, ...]) -> Any:
    """The UPDATE recording an item's outcome, built once per set of columns: a
    statement used again skips SQLAlchemy's construction and cache-key work."""
    return (
        update(media)
        .where(media.c.id == bindparam("_media_id"), media.c.lease_owner == bindparam("_owner"))
        .values({name: bindparam(f"v_{name}", type_=media.c[name].type) for name in columns})
        .returning(*media.c)
    )


def is_final(item: MediaItem) -> bool:
    """Whether an item has reached a final state: stored, rejected, or failed with no
    automatic retry ahead (the pipeline clears `next_attempt_at` when retries are spent)."""
    return item.state in FINAL_MEDIA_STATES or (
        item.state == "failed" and item.next_attempt_at is None
    )


class MediaQueue(IndexCore):
    """Media items as work: who holds which item, until when, and how it ended."""

    @translate_db_errors
    def claim_media(
        self,
        owner: str,
        *,
        lease_seconds: float,
        limit: int,
        max_attempts: int,
        message_sid: str | None = None,
        now: datetime | None = None,
    ) -> list[MediaItem]:
        """Atomically lease up to `limit` due items (pending, or failed and due)."""
        now = now or utcnow()
        due = and_(
            media.c.state.in_(WORK_STATES),
            media.c.attempts < max_attempts,
            or_(media.c.next_attempt_at.is_(None), media.c.next_attempt_at <= now),
            or_(media.c.lease_expires_at.is_(None), media.c.lease_expires_at < now),
        )
        if message_sid is not None:
            due = and_(due, media.c.message_sid == message_sid)
        pick = select(media.c.id).where(due).order_by(media.c.id).limit(limit)
        if self.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            update(media)
            .where(media.c.id.in_(pick.scalar_subquery()))
            .values(
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=media.c.attempts + 1,
                updated_at=now,
            )
            .returning(*media.c)
        )
        with self.begin() as conn:
            rows = conn.execute(stmt).mappings().all()
        items = [MediaItem.from_row(r) for r in rows]
        return sorted(items, key=lambda item: (item.message_sid, item.idx))

    @translate_db_errors
    def extend_lease(self, media_id: int, owner: str, seconds: float) -> bool:
        """Keep a long download's lease alive; False if the lease was lost."""
        now = utcnow()
        with self.begin() as conn:
            result = conn.execute(
                update(media)
                .where(media.c.id == media_id, media.c.lease_owner == owner)
                .values(lease_expires_at=now + timedelta(seconds=seconds))
            )
            return bool(result.rowcount)

    @translate_db_errors
    def finish_media(self, media_id: int, owner: str, **fields: Any) -> bool:
        """Record the outcome of a leased item and release the lease.

        Only the current lease holder may write, so a process whose lease ran
        out cannot overwrite the result of the one that took over.
        """
        now = utcnow()
        values = {"lease_owner": None, "lease_expires_at": None, "updated_at": now, **fields}
        if "facts" in values and not isinstance(values["facts"], str | type(None)):
            values["facts"] = json.dumps(values["facts"], sort_keys=True)
        stmt = _finish_statement(tuple(sorted(values)))
        params = {
            "_media_id": media_id,
            "_owner": owner,
            **{f"v_{name}": value for name, value in values.items()},
        }

        due = 0

        def finish(conn: Connection) -> bool:
            nonlocal due
            row = conn.execute(stmt, params).mappings().first()
            if row is None:
                return False
            item = MediaItem.from_row(row)
            sid = item.message_sid
            refresh = {"_sid": sid, "_now": now}
            message = conn.execute(_REFRESH_MESSAGE_STATE, refresh).mappings().one()
            if not is_final(item):
                return True
            new = [NewEvent(f"media.{item.state}", media_event_data(item), sid)]
            if message["state"] == "pending" and not self._concurrent_writers:
                # SQLite has one writer: a pending message has an item still to finish.
                due = write_events(conn, new, now)
                return True
            # Read after the message row was written (and so locked, on PostgreSQL):
            # of two items finishing at once, the later one sees the other final.
            siblings = [
                MediaItem.from_row(m)
                for m in conn.execute(_MEDIA_OF_MESSAGE, {"_sid": sid}).mappings()
            ]
            if all(is_final(m) for m in siblings):
                if self._concurrent_writers:
                    # The refresh above judged the others from the snapshot taken
                    # before it waited for their lock; judged again now that it holds it.
                    message = conn.execute(_REFRESH_MESSAGE_STATE, refresh).mappings().one()
                data = message_event_data(message, siblings)
                new.append(NewEvent("message.completed", data, sid))
            due = write_events(conn, new, now)
            return True

        # Items finishing together (the media of one message, say) share a commit.
        done = self._writes.run(finish)
        self.notify_events(due)
        return done

    @translate_db_errors
    def requeue_failed(self, message_sid: str | None = None) -> int:
        """Put failed items back in the queue with a fresh retry budget."""
        now = utcnow()
        cond = media.c.state == "failed"
        if message_sid:
            cond = and_(cond, media.c.message_sid == message_sid)
        with self.begin() as conn:
            result = conn.execute(
                update(media)
                .where(cond)
                .values(
                    attempts=0,
                    next_attempt_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
            sids = conn.execute(select(media.c.message_sid).where(cond).distinct()).scalars().all()
            for sid in sids:
                conn.execute(
                    update(messages)
                    .where(messages.c.sid == sid)
                    .values(state="pending", updated_at=now)
                )
            return int(result.rowcount)

    @translate_db_errors
    def backlog(self) -> dict[str, int]:
        """Media counts by state (for readiness, metrics and `check`)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(media.c.state, func.count()).group_by(media.c.state)).all()
        return {state: int(n) for state, n in rows}

    # -- thumbnails ---------------------------------------------------------

    @translate_db_errors
    def missing_thumbnails(self, limit: int, *, older_than: float) -> list[MediaItem]:
        """Stored images without a thumbnail, stored more than `older_than` seconds ago."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(media)
                .where(
                    media.c.state == "stored",
                    media.c.kind == "image",
                    media.c.thumbnail_key.is_(None),
                    media.c.updated_at < cutoff,
                )
                .limit(limit)
            ).mappings()
            return [MediaItem.from_row(r) for r in rows]

    @translate_db_errors
    def set_thumbnail(self, media_id: int, key: str) -> None:
        """Record the storage key of an item's thumbnail."""
        self.set_thumbnails([(media_id, key)])

    @translate_db_errors
    def set_thumbnails(self, pairs: Sequence[tuple[int, str]]) -> None:
        """Record the thumbnail keys of several items in one transaction."""
        if not pairs:
            return
        stmt = (
            update(media)
            .where(media.c.id == bindparam("media_id"))
            .values(thumbnail_key=bindparam("key"))
        )
        # A live page swaps the tile for the thumbnail (a live row, not a webhook event).
        live = live_rows(((THUMBNAIL, None, {"id": m}) for m, _ in pairs), utcnow())
        with self.begin() as conn:
            conn.execute(stmt, [{"media_id": m, "key": k} for m, k in pairs])
            write_live(conn, live)

    # -- rescans -------------------------------------------------------------

    @translate_db_errors
    def stored_since(
        self, since: datetime, *, after_id: int = 0, limit: int = 100
    ) -> list[MediaItem]:
        """Stored items created at or after `since`, in id order after `after_id` (one page)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(media)
                .where(
                    media.c.state == "stored",
                    media.c.created_at >= since,
                    media.c.id > after_id,
                )
                .order_by(media.c.id)
                .limit(limit)
            ).mappings()
            return [MediaItem.from_row(r) for r in rows]

    @translate_db_errors
    def record_rescan(self, media_id: int, facts: str, *, malware: str | None = None) -> bool:
        """Record a rescan of a stored item: its facts, and with `malware` (the detail) the
        item becomes rejected for malware without stored objects. False if no longer stored."""
        now = utcnow()
        values: dict[str, Any] = {"facts": facts, "updated_at": now}
        if malware is not None:
            values |= {
                "state": "rejected",
                "reason": "malware",
                "detail": malware[:500],
                "storage_key": None,
                "thumbnail_key": None,
            }
        stmt = (
            update(media)
            .where(media.c.id == media_id, media.c.state == "stored")
            .values(**values)
            .returning(media.c.message_sid)
        )
        with self.begin() as conn:
            sid = conn.execute(stmt).scalar_one_or_none()
            if sid is None:
                return False
            conn.execute(_REFRESH_MESSAGE_STATE, {"_sid": sid, "_now": now})
            return True

    # -- remote (Twilio-side) deletions ------------------------------------

    @translate_db_errors
    def remote_deletions_due(self, limit: int = 50) -> list[MediaItem]:
        """Stored items whose Twilio copy still has to be deleted (with their account_sid)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(media, messages.c.account_sid)
                .join(messages, messages.c.sid == media.c.message_sid)
                .where(
                    media.c.state == "stored",
                    media.c.remote_delete_state.in_(("pending", "failed")),
                )
                .limit(limit)
            ).mappings()
            return [MediaItem.from_row(r) for r in rows]

    @translate_db_errors
    def set_remote_delete(self, media_id: int, state: str) -> None:
        """Record the state of the Twilio-side deletion of one item."""
        now = utcnow()
        with self.begin() as conn:
            conn.execute(
                update(media)
                .where(media.c.id == media_id)
                .values(
                    remote_delete_state=state,
                    remote_deleted_at=now if state == "done" else None,
                    updated_at=now,
                )
            )
