"""Outbound messages and their status events in the index (SQLAlchemy Core, SQLite and PostgreSQL).

A row's life: ``pending`` (recorded under its idempotency key) -> ``submitting``
(claimed by exactly one sender, the request is on its way) -> Twilio's status
from then on (``accepted``/``queued`` ... ``delivered``), or ``refused`` (we
refused it: opted out, invalid) / ``rejected`` (Twilio answered with an error
and created nothing). A row left in ``submitting`` by a crash is resolved
against Twilio's message list before anything is sent again.

Status callbacks arrive in any order. Every event is stored; the row's status
only moves forward (queued < sending < sent < delivered/undelivered/failed/read)
and never leaves a final state, except delivered -> read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping

from receiver.index.errors import translate_db_errors
from receiver.index.events import NewEvent, write_events
from receiver.index.schema import outbound_messages, status_events, utcnow
from receiver.index.threads import touch_outbound
from receiver.twilio.webhook import StatusCallback

LOCAL_STATES = ("pending", "submitting", "refused", "rejected")
#: Twilio's outbound statuses by progress; equal ranks are alternatives.
RANK: dict[str, int] = {
    "pending": 0,
    "submitting": 0,
    "accepted": 1,
    "scheduled": 1,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "canceled": 5,
    "partially_delivered": 5,
    "read": 6,
}
FINAL = frozenset(
    {
        "delivered",
        "undelivered",
        "failed",
        "canceled",
        "partially_delivered",
        "read",
        "refused",
        "rejected",
    }
)


#: Statuses after which Twilio's Message resource carries the final price.
PRICED_STATUSES = ("sent", "delivered", "undelivered", "failed", "read")


@dataclass(frozen=True)
class OutboundRecord:
    """One row of `outbound_messages`: what was asked, what was sent, where it stands."""

    id: int
    to_addr: str
    status: str
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None = None
    sid: str | None = None
    account_sid: str | None = None
    from_addr: str | None = None
    messaging_service_sid: str | None = None
    body: str = ""
    #: The prepared (or requested) attachments, as stored: JSON objects.
    media: tuple[dict[str, Any], ...] = ()
    fallback: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    raw_dlr_done_date: str | None = None
    price: float | None = None
    price_unit: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as a plain dict (media as a list), for JSON views."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["media"] = list(self.media)
        return out


def can_advance(current: str, new: str) -> bool:
    """Whether a row in status `current` may move to `new` (forward only; final stays)."""
    if new not in RANK or current == new:
        return False
    if current in FINAL:
        return current == "delivered" and new == "read"
    return RANK[new] > RANK.get(current, 0)


def sources_for(new: str) -> list[str]:
    """Every status a row may be in for `new` to apply."""
    return [s for s in (*RANK, "refused", "rejected") if can_advance(s, new)]


class OutboundIndex:
    """Reads and writes of outbound messages and status events against one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        begin: Callable[[], AbstractContextManager[Connection]] | None = None,
        notify_events: Callable[[int], None] | None = None,
    ) -> None:
        """Use `engine`; `begin` opens write transactions (default: `engine.begin`).

        Pass the index's `MediaIndex.begin` when both share a SQLite file, so
        outbound writers queue on its writer lock like every other writer
        instead of sleeping in SQLite's busy handler, and its `notify_events`
        so `message.status` events wake the dispatcher.
        """
        self.engine = engine
        self.dialect = engine.dialect.name
        self._begin = begin or engine.begin
        self._notify = notify_events

    def _insert(self) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(outbound_messages)
        return sqlite.insert(outbound_messages)

    # -- rows ------------------------------------------------------------------

    @translate_db_errors
    def reserve(self, row: Mapping[str, Any]) -> tuple[OutboundRecord, bool]:
        """Record a message to send under its idempotency key, once.

        Returns (row, created). With a key that is already known, nothing is
        written and the existing row comes back with created False.
        """
        now = utcnow()
        values = {"status": "pending", "created_at": now, "updated_at": now, **row}
        if not isinstance(values.get("media", "[]"), str):
            values["media"] = json.dumps(values["media"], sort_keys=True)
        with self._begin() as conn:
            stmt = self._insert().values(**values)
            if values.get("idempotency_key"):
                stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"])
            new_id = conn.execute(stmt.returning(outbound_messages.c.id)).scalar()
            if new_id is None:
                existing = self._one(
                    conn, outbound_messages.c.idempotency_key == values["idempotency_key"]
                )
                assert existing is not None
                return existing, False
            touch_outbound(conn, values, new_id)
            created = self._one(conn, outbound_messages.c.id == new_id)
            assert created is not None
            return created, True

    @translate_db_errors
    def get(self, row_id: int) -> OutboundRecord | None:
        """One row by id."""
        with self.engine.connect() as conn:
            return self._one(conn, outbound_messages.c.id == row_id)

    @translate_db_errors
    def by_key(self, key: str) -> OutboundRecord | None:
        """One row by idempotency key."""
        with self.engine.connect() as conn:
            return self._one(conn, outbound_messages.c.idempotency_key == key)

    @translate_db_errors
    def by_sid(self, sid: str) -> OutboundRecord | None:
        """One row by Twilio MessageSid."""
        with self.engine.connect() as conn:
            return self._one(conn, outbound_messages.c.sid == sid)

    @translate_db_errors
    def recent(self, limit: int = 50, *, before_id: int | None = None) -> list[OutboundRecord]:
        """Newest rows first (keyset on id)."""
        stmt = select(outbound_messages).order_by(outbound_messages.c.id.desc()).limit(limit)
        if before_id is not None:
            stmt = stmt.where(outbound_messages.c.id < before_id)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    @translate_db_errors
    def in_states(self, states: Iterable[str]) -> list[OutboundRecord]:
        """Rows in any of `states`, oldest first."""
        stmt = (
            select(outbound_messages)
            .where(outbound_messages.c.status.in_(list(states)))
            .order_by(outbound_messages.c.id)
        )
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    @translate_db_errors
    def unpriced_final(self, since: datetime) -> list[OutboundRecord]:
        """Final messages created since `since` whose price is not yet known, oldest first."""
        stmt = (
            select(outbound_messages)
            .where(
                outbound_messages.c.status.in_(list(PRICED_STATUSES)),
                outbound_messages.c.sid.is_not(None),
                outbound_messages.c.price.is_(None),
                outbound_messages.c.created_at >= since,
            )
            .order_by(outbound_messages.c.id)
        )
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    @translate_db_errors
    def record_price(self, sid: str, price: float, unit: str | None) -> None:
        """Store what Twilio billed for a message (its Message resource's price and unit)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(outbound_messages)
                .where(outbound_messages.c.sid == sid)
                .values(price=price, price_unit=(unit or "")[:8] or None)
            )

    @translate_db_errors
    def update_prepared(self, row_id: int, *, body: str, media: Any, fallback: str | None) -> None:
        """Store what preparation produced (final body, hosted media) on a pending row."""
        with self._begin() as conn:
            conn.execute(
                update(outbound_messages)
                .where(outbound_messages.c.id == row_id, outbound_messages.c.status == "pending")
                .values(
                    body=body,
                    media=json.dumps(media, sort_keys=True),
                    fallback=fallback,
                    updated_at=utcnow(),
                )
            )

    @translate_db_errors
    def claim(self, row_id: int) -> bool:
        """Move a pending row to ``submitting``; False if another sender already did."""
        return self._move(row_id, ("pending",), status="submitting")

    @translate_db_errors
    def retry(self, row_id: int) -> bool:
        """Make a refused or rejected row pending again (nothing was created on Twilio)."""
        return self._move(row_id, ("refused", "rejected"), status="pending")

    @translate_db_errors
    def reclaim(self, row_id: int, seen: datetime) -> bool:
        """Take over a ``submitting`` row as last seen at `seen` (its `updated_at`); False
        when another sender touched it since. Restarts its in-flight time."""
        with self._begin() as conn:
            result = conn.execute(
                update(outbound_messages)
                .where(
                    outbound_messages.c.id == row_id,
                    outbound_messages.c.status == "submitting",
                    outbound_messages.c.updated_at == seen,
                )
                .values(updated_at=utcnow())
            )
            return bool(result.rowcount)

    @translate_db_errors
    def release(self, row_id: int, *, error_message: str | None = None) -> bool:
        """Put a ``submitting`` row back to ``pending``: the request certainly never arrived."""
        return self._move(row_id, ("submitting",), status="pending", error_message=error_message)

    @translate_db_errors
    def finish(
        self,
        row_id: int,
        status: str,
        *,
        error_code: int | None = None,
        error_message: str | None = None,
    ) -> bool:
        """End a pending or submitting row as ``refused`` or ``rejected`` with the reason."""
        if status not in ("refused", "rejected"):
            raise ValueError("finish() only ends a row as refused or rejected")
        return self._move(
            row_id,
            ("pending", "submitting"),
            status=status,
            error_code=error_code,
            error_message=error_message,
        )

    @translate_db_errors
    def mark_submitted(self, row_id: int, message: Mapping[str, Any]) -> OutboundRecord:
        """Record Twilio's Message resource for a claimed row, then apply any status events
        that arrived before it (callbacks can beat the create response)."""
        now = utcnow()
        sid = str(message["sid"])
        status = str(message.get("status") or "queued")
        with self._begin() as conn:
            conn.execute(
                update(outbound_messages)
                .where(outbound_messages.c.id == row_id)
                .values(
                    sid=sid,
                    account_sid=message.get("account_sid"),
                    status=status if status in RANK else "queued",
                    error_code=message.get("error_code"),
                    error_message=message.get("error_message"),
                    from_addr=message.get("from") or outbound_messages.c.from_addr,
                    updated_at=now,
                )
            )
            moves = [
                self._apply(
                    conn, sid, event["status"], event["error_code"], event["raw_dlr_done_date"], now
                )
                for event in _events(conn, sid)
            ]
            due = write_events(conn, [m for m in moves if m is not None], now)
            row = self._one(conn, outbound_messages.c.id == row_id)
        self._notified(due)
        assert row is not None
        return row

    @translate_db_errors
    def adopt(self, row_id: int, message: Mapping[str, Any]) -> OutboundRecord:
        """Attach a Message found on Twilio to a row left ``submitting`` by a crash."""
        return self.mark_submitted(row_id, message)

    def _move(self, row_id: int, from_states: tuple[str, ...], **values: Any) -> bool:
        with self._begin() as conn:
            result = conn.execute(
                update(outbound_messages)
                .where(
                    outbound_messages.c.id == row_id, outbound_messages.c.status.in_(from_states)
                )
                .values(updated_at=utcnow(), **values)
            )
            return bool(result.rowcount)

    # -- status callbacks ----------------------------------------------------------

    @translate_db_errors
    def record_status(self, event: StatusCallback) -> str | None:
        """Store a status callback and move the message forward if it is news.

        Returns the message's status afterwards, or None when no outbound row
        has that MessageSid (yet: the event is kept and applied on submit).
        """
        now = utcnow()
        with self._begin() as conn:
            conn.execute(
                status_events.insert().values(
                    message_sid=event.message_sid,
                    status=event.status,
                    error_code=event.error_code,
                    raw_dlr_done_date=event.raw_dlr_done_date,
                    params=json.dumps([list(p) for p in event.params]),
                    received_at=now,
                )
            )
            moved = self._apply(
                conn,
                event.message_sid,
                event.status,
                event.error_code,
                event.raw_dlr_done_date,
                now,
            )
            due = write_events(conn, [moved] if moved else [], now)
            current = conn.execute(
                select(outbound_messages.c.status).where(
                    outbound_messages.c.sid == event.message_sid
                )
            ).scalar()
        self._notified(due)
        return str(current) if current is not None else None

    def _notified(self, deliveries: int) -> None:
        if deliveries and self._notify is not None:
            self._notify(deliveries)

    def _apply(
        self,
        conn: Connection,
        sid: str,
        status: str,
        error_code: int | None,
        raw_dlr: str | None,
        now: datetime,
    ) -> NewEvent | None:
        """One conditional UPDATE: atomic under concurrent callbacks on both databases.

        Returns the `message.status` event when the status moved forward.
        """
        moved: NewEvent | None = None
        sources = sources_for(status)
        if sources:
            values: dict[str, Any] = {"status": status, "updated_at": now}
            if error_code is not None:
                values["error_code"] = error_code
            if raw_dlr:
                values["raw_dlr_done_date"] = raw_dlr
            row = (
                conn.execute(
                    update(outbound_messages)
                    .where(outbound_messages.c.sid == sid, outbound_messages.c.status.in_(sources))
                    .values(**values)
                    .returning(*outbound_messages.c)
                )
                .mappings()
                .first()
            )
            if row is not None:
                moved = NewEvent("message.status", status_event_data(row), None)
        # A repeated final event may carry what the first lacked (ErrorCode, DLR date).
        conn.execute(
            update(outbound_messages)
            .where(outbound_messages.c.sid == sid, outbound_messages.c.status == status)
            .values(
                error_code=func.coalesce(outbound_messages.c.error_code, error_code),
                raw_dlr_done_date=func.coalesce(outbound_messages.c.raw_dlr_done_date, raw_dlr),
            )
        )
        return moved

    @translate_db_errors
    def events(self, sid: str) -> list[dict[str, Any]]:
        """Every status event of one message, in arrival order."""
        with self.engine.connect() as conn:
            rows = _events(conn, sid)
        out = []
        for r in rows:
            item = dict(r)
            item["params"] = json.loads(item["params"])
            out.append(item)
        return out

    # -- figures -------------------------------------------------------------------

    @translate_db_errors
    def stats(self, *, since: datetime | None = None) -> dict[str, Any]:
        """Counts by current status, by error code and by day (UTC) of creation."""
        cond = outbound_messages.c.created_at >= since if since is not None else true()
        day = func.date(outbound_messages.c.created_at)
        with self.engine.connect() as conn:
            counts = _by_status(conn, cond)
            by_code = conn.execute(
                select(outbound_messages.c.error_code, func.count())
                .where(cond, outbound_messages.c.error_code.is_not(None))
                .group_by(outbound_messages.c.error_code)
            ).all()
            by_day = conn.execute(
                select(day, outbound_messages.c.status, func.count())
                .where(cond)
                .group_by(day, outbound_messages.c.status)
                .order_by(day)
            ).all()
        days: dict[str, dict[str, int]] = {}
        for when, status, n in by_day:
            entry = days.setdefault(str(when), {"total": 0})
            entry[status] = int(n)
            entry["total"] += int(n)
        return {
            "total": sum(counts.values()),
            "by_status": dict(sorted(counts.items())),
            "by_error_code": {str(code): int(n) for code, n in sorted(by_code)},
            "by_day": days,
        }

    @translate_db_errors
    def count_by_status(self) -> dict[str, int]:
        """Every outbound message counted by its current status (the metrics gauge)."""
        with self.engine.connect() as conn:
            return _by_status(conn, true())

    # -- internals -----------------------------------------------------------------

    def _one(self, conn: Connection, cond: Any) -> OutboundRecord | None:
        row = conn.execute(select(outbound_messages).where(cond)).mappings().first()
        return _row(row) if row is not None else None


def status_event_data(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The `data` of a `message.status` event: the outbound message where it now stands."""
    return {
        "sid": row["sid"],
        "account_sid": row["account_sid"],
        "from": row["from_addr"],
        "to": row["to_addr"],
        "messaging_service_sid": row["messaging_service_sid"],
        "status": row["status"],
        "error_code": row["error_code"],
        "error_message": row["error_message"],
        "updated_at": row["updated_at"].isoformat().replace("+00:00", "Z")
        if row["updated_at"]
        else None,
    }


def _events(conn: Connection, sid: str) -> Sequence[RowMapping]:
    """The status events of one message, in arrival order."""
    stmt = (
        select(status_events).where(status_events.c.message_sid == sid).order_by(status_events.c.id)
    )
    return conn.execute(stmt).mappings().all()


def _by_status(conn: Connection, cond: Any) -> dict[str, int]:
    rows = conn.execute(
        select(outbound_messages.c.status, func.count())
        .where(cond)
        .group_by(outbound_messages.c.status)
    ).all()
    return {str(status): int(n) for status, n in rows}


def _row(row: Mapping[Any, Any]) -> OutboundRecord:
    values = dict(row)
    try:
        media = json.loads(values.get("media") or "[]")
    except ValueError:
        media = []
    values["media"] = tuple(media) if isinstance(media, list) else ()
    return OutboundRecord(**values)
