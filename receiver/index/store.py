"""The metadata index: every write the workflows make, idempotent and short.

Rows come back as plain dicts. Claims of media work are atomic: on PostgreSQL
with `FOR UPDATE SKIP LOCKED`, on SQLite with one `UPDATE ... RETURNING`
statement (SQLite serialises writers), so two processes never work on the
same item at the same time, and a crashed process's lease simply expires.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import lru_cache, wraps
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import and_, bindparam, case, delete, exists, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from receiver.errors import IndexUnavailable
from receiver.index import db
from receiver.index.groupcommit import GroupCommit
from receiver.index.schema import media, messages, opt_outs, utcnow
from receiver.index.writelock import WriterLock

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

FINAL_MEDIA_STATES = ("stored", "rejected")
WORK_STATES = ("pending", "failed")


def _media_of_message_where(*conditions: Any) -> Any:
    return exists().where(media.c.message_sid == bindparam("_sid"), *conditions)


# A message is complete once every item is final, incomplete once the rest
# have failed, else pending; one statement, so the writer lock is held briefly.
_REFRESH_MESSAGE_STATE = (
    update(messages)
    .where(messages.c.sid == bindparam("_sid"))
    .values(
        state=case(
            (~_media_of_message_where(media.c.state.not_in(FINAL_MEDIA_STATES)), "complete"),
            (
                and_(
                    _media_of_message_where(media.c.state == "failed"),
                    ~_media_of_message_where(media.c.state.not_in((*FINAL_MEDIA_STATES, "failed"))),
                ),
                "incomplete",
            ),
            else_="pending",
        ),
        updated_at=bindparam("_now", type_=messages.c.updated_at.type),
    )
)


_INSERT_MEDIA_RETURNING = media.insert().returning(*media.c, sort_by_parameter_order=True)


@lru_cache(maxsize=32)
def _finish_statement(columns: tuple[str, ...]) -> Any:
    """The UPDATE recording an item's outcome, built once per set of columns: a
    statement used again skips SQLAlchemy's construction and cache-key work."""
    return (
        update(media)
        .where(media.c.id == bindparam("_media_id"), media.c.lease_owner == bindparam("_owner"))
        .values({name: bindparam(f"v_{name}", type_=media.c[name].type) for name in columns})
        .returning(media.c.message_sid)
    )


def _unavailable(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost database connection into IndexUnavailable (the web answers 503)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (OperationalError, DBAPIError) as exc:
            if (
                isinstance(exc, DBAPIError)
                and not exc.connection_invalidated
                and not isinstance(exc, OperationalError)
            ):
                raise
            raise IndexUnavailable(f"index unavailable: {exc.__class__.__name__}") from exc

    return wrapper


class MediaIndex:
    """Reads and writes of messages, media, opt-outs against one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._write_lock: WriterLock | None = None
        if self.dialect == "sqlite":
            database = engine.url.database
            on_disk = database not in (None, "", ":memory:") and not str(database).startswith(
                "file:"
            )
            self._write_lock = WriterLock(database if on_disk else None)
        self._writes = GroupCommit(self.begin)
        # Statements of the webhook path are built once: SQLAlchemy then only
        # binds parameters (values passed at execute time, not baked in).
        self._insert_message = (
            self._insert(messages)
            .on_conflict_do_nothing(index_elements=["sid"])
            .returning(messages.c.sid)
        )

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> MediaIndex:
        """Connect to `url` and bring the schema up to date."""
        engine = db.make_engine(url)
        if upgrade:
            db.upgrade(engine)
        return cls(engine)

    def close(self) -> None:
        """Release every pooled connection (call after fork and at shutdown)."""
        self.engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A short write transaction.

        SQLite has one writer at a time and its busy handler backs off with
        sleeps of up to 100 ms; writers of every thread and process queue on
        a `WriterLock` instead, which hands over without sleeping.
        """
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock.hold(), self.engine.begin() as conn:
            yield conn

    @_unavailable
    def ping(self) -> None:
        """Raise IndexUnavailable unless the database answers."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- inbound messages -------------------------------------------------

    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

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

    @_unavailable
    def insert_message(
        self,
        row: Mapping[str, Any],
        media_rows: Iterable[Mapping[str, Any]],
        *,
        lease_owner: str | None = None,
        lease_seconds: float = 0,
    ) -> list[dict[str, Any]] | None:
        """Insert a message and its media rows once; the media rows as stored, or
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

        def insert(conn: Connection) -> list[dict[str, Any]] | None:
            if conn.execute(self._insert_message, values).first() is None:
                return None
            if not media_list:
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
            return [dict(r) for r in stored.mappings()]

        # Webhooks arriving together share a commit with each other and with
        # item outcomes; each still returns only once its own insert is durable.
        return self._writes.run(insert)

    @_unavailable
    def account_of(self, sid: str) -> str | None:
        """The AccountSid of message `sid`, or None when there is no such message."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(messages.c.account_sid).where(messages.c.sid == sid)
            ).first()
        return None if found is None else str(found[0])

    @_unavailable
    def get_message(self, sid: str) -> dict[str, Any] | None:
        """One message with its media rows (in index order), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(messages).where(messages.c.sid == sid)).mappings().first()
            if row is None:
                return None
            items = (
                conn.execute(select(media).where(media.c.message_sid == sid).order_by(media.c.idx))
                .mappings()
                .all()
            )
        out = dict(row)
        out["media"] = [dict(m) for m in items]
        return out

    @_unavailable
    def get_media(self, media_id: int) -> dict[str, Any] | None:
        """One media row by id, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(media).where(media.c.id == media_id)).mappings().first()
        return dict(row) if row else None

    @_unavailable
    def media_of(self, sid: str) -> list[dict[str, Any]]:
        """Media rows of one message in index order."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(media).where(media.c.message_sid == sid).order_by(media.c.idx))
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    @_unavailable
    def delete_message(self, sid: str) -> bool:
        """Delete a message row and its media rows (objects must be deleted first)."""
        with self.begin() as conn:
            conn.execute(delete(media).where(media.c.message_sid == sid))
            result = conn.execute(delete(messages).where(messages.c.sid == sid))
            return bool(result.rowcount)

    # -- media work queue -----------------------------------------------

    @_unavailable
    def claim_media(
        self,
        owner: str,
        *,
        lease_seconds: float,
        limit: int,
        max_attempts: int,
        message_sid: str | None = None,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
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
        return sorted((dict(r) for r in rows), key=lambda r: (r["message_sid"], r["idx"]))

    @_unavailable
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

    @_unavailable
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

        def finish(conn: Connection) -> bool:
            sid = conn.execute(stmt, params).scalar_one_or_none()
            if sid is None:
                return False
            self._refresh_message_state(conn, sid, now)
            return True

        # Items finishing together (the media of one message, say) share a commit.
        return self._writes.run(finish)

    def _refresh_message_state(self, conn: Connection, sid: str, now: datetime) -> None:
        conn.execute(_REFRESH_MESSAGE_STATE, {"_sid": sid, "_now": now})

    @_unavailable
    def missing_thumbnails(self, limit: int, *, older_than: float) -> list[dict[str, Any]]:
        """Stored images without a thumbnail, stored more than `older_than` seconds ago."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(media.c.id, media.c.storage_key)
                    .where(
                        media.c.state == "stored",
                        media.c.kind == "image",
                        media.c.thumbnail_key.is_(None),
                        media.c.updated_at < cutoff,
                    )
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    @_unavailable
    def set_thumbnail(self, media_id: int, key: str) -> None:
        """Record the storage key of an item's thumbnail."""
        self.set_thumbnails([(media_id, key)])

    @_unavailable
    def set_thumbnails(self, pairs: Sequence[tuple[int, str]]) -> None:
        """Record the thumbnail keys of several items in one transaction."""
        if not pairs:
            return
        stmt = (
            update(media)
            .where(media.c.id == bindparam("media_id"))
            .values(thumbnail_key=bindparam("key"))
        )
        with self.begin() as conn:
            conn.execute(stmt, [{"media_id": m, "key": k} for m, k in pairs])

    @_unavailable
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

    @_unavailable
    def backlog(self) -> dict[str, int]:
        """Media counts by state (for readiness, metrics and `check`)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(media.c.state, func.count()).group_by(media.c.state)).all()
        return {state: int(n) for state, n in rows}

    @_unavailable
    def remote_deletions_due(self, limit: int = 50) -> list[dict[str, Any]]:
        """Stored items whose Twilio copy still has to be deleted."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(media, messages.c.account_sid)
                    .join(messages, messages.c.sid == media.c.message_sid)
                    .where(
                        media.c.state == "stored",
                        media.c.remote_delete_state.in_(("pending", "failed")),
                    )
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    @_unavailable
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

    # -- opt-outs -------------------------------------------------------

    @_unavailable
    def set_opt_out(
        self,
        address: str,
        sender: str,
        *,
        opted_out: bool,
        keyword: str,
        source: str,
        message_sid: str | None = None,
    ) -> None:
        """Record that `address` opted out of (or back in to) messages from `sender`."""
        now = utcnow()
        values = {
            "address": address,
            "sender": sender,
            "opted_out": opted_out,
            "keyword": keyword,
            "source": source,
            "message_sid": message_sid,
            "updated_at": now,
        }
        stmt = self._insert(opt_outs).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["address", "sender"],
            set_={
                k: stmt.excluded[k]
                for k in ("opted_out", "keyword", "source", "message_sid", "updated_at")
            },
        )
        with self.begin() as conn:
            conn.execute(stmt)

    @_unavailable
    def is_opted_out(self, address: str, senders: Iterable[str]) -> bool:
        """Whether `address` opted out of any of `senders` (or of every sender, "*")."""
        names = [*senders, "*"]
        with self.engine.connect() as conn:
            row = conn.execute(
                select(opt_outs.c.opted_out)
                .where(opt_outs.c.address == address, opt_outs.c.sender.in_(names))
                .order_by(opt_outs.c.updated_at.desc())
                .limit(1)
            ).first()
        return bool(row and row[0])

    @_unavailable
    def opt_out_rows(self, address: str) -> list[dict[str, Any]]:
        """Every opt-out record of one address."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(opt_outs).where(opt_outs.c.address == address)).mappings().all()
            )
        return [dict(r) for r in rows]
