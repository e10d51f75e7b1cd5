"""The events outbox: event rows, one delivery row per (event, endpoint), attempts, endpoints.

`write_events` is called inside the transaction of the change that causes
the events (a message recorded, an item finished, a status moved, an opt-out
set), so the change and its events commit together or not at all. It
inserts the events in one statement; the database's `events_fan_out`
trigger adds their delivery rows, one per enabled endpoint subscribed to
the type. Claiming and recording deliveries is `receiver.index.event_queue`.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, literal, or_, select, update
from sqlalchemy.engine import Connection

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.live import delete_live_of, live_rows, write_live
from receiver.index.schema import (
    UTCDateTime,
    endpoints,
    event_attempts,
    event_deliveries,
    events,
    utcnow,
)

#: Every event type, in the order the README lists them.
EVENT_TYPES = (
    "message.received",
    "message.completed",
    "media.stored",
    "media.rejected",
    "media.failed",
    "media.playable",
    "message.status",
    "optout.changed",
    "endpoint.test",
)
#: Types an endpoint may subscribe to (`endpoint.test` always reaches the one tested).
SUBSCRIBABLE = EVENT_TYPES[:-1]
#: How much of an endpoint's answer is kept per attempt.
RESPONSE_KEEP = 1024


_SEQUENCE = itertools.count()


def new_event_id(now: float | None = None) -> str:
    """`evt_` + 12 hex digits of milliseconds, 4 of a per-process sequence, 10 random.

    Ids sort by creation time, and within one millisecond of one process by
    order of creation (the events of one change are written in order).
    """
    ms = int((time.time() if now is None else now) * 1000)
    return f"evt_{ms:012x}{next(_SEQUENCE) % 65536:04x}{secrets.token_hex(5)}"


def new_endpoint_id() -> str:
    """`ep_` + 20 random hex digits."""
    return "ep_" + secrets.token_hex(10)


def events_column(types: Iterable[str] | None) -> str:
    """How an endpoint's subscription is stored: "*" or ",a,b,"."""
    chosen = [t for t in (types or ()) if t]
    if not chosen:
        return "*"
    unknown = [t for t in chosen if t not in SUBSCRIBABLE]
    if unknown:
        raise ValueError(
            f"unknown event type {unknown[0]!r}; choose from {', '.join(SUBSCRIBABLE)}"
        )
    return "," + ",".join(dict.fromkeys(chosen)) + ","


@dataclass(frozen=True)
class NewEvent:
    """An event about to be written with the change that causes it."""

    type: str
    data: Mapping[Any, Any]
    message_sid: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One endpoint: where events go, which types, and the secrets that sign them."""

    id: str
    url: str
    events: tuple[str, ...]  # empty: every type
    secret: str
    enabled: bool
    created_at: datetime
    description: str = ""
    source: str = "api"
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    disabled_reason: str | None = None
    last_success_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Endpoint:
        """The endpoint of one `endpoints` row."""
        values = dict(row)
        raw = values.pop("events") or "*"
        types = () if raw == "*" else tuple(t for t in raw.split(",") if t)
        return cls(events=types, **values)

    def secrets_at(self, now: datetime) -> tuple[str, ...]:
        """The secrets that sign a message sent at `now` (new first, then the previous one)."""
        if (
            self.previous_secret
            and self.previous_secret_expires_at is not None
            and self.previous_secret_expires_at > now
        ):
            return (self.secret, self.previous_secret)
        return (self.secret,)

    def public(self) -> dict[str, Any]:
        """The endpoint as the API and `endpoints list` show it (no secret)."""
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events) or ["*"],
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "description": self.description,
            "source": self.source,
            "created_at": _iso(self.created_at),
            "last_success_at": _iso(self.last_success_at),
        }


@dataclass(frozen=True)
class EventRecord:
    """One event row with its JSON data decoded."""

    id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]
    created_at: datetime
    message_sid: str | None = None
    deliveries: tuple[dict[str, Any], ...] = ()
    attempts: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The event with its deliveries (and attempts when read one by one)."""
        return {
            "id": self.id,
            "type": self.type,
            "timestamp": _iso(self.timestamp),
            "created_at": _iso(self.created_at),
            "message_sid": self.message_sid,
            "data": self.data,
            "deliveries": list(self.deliveries),
            "attempts": list(self.attempts),
        }


@dataclass
class Figures:
    """Event counts for /metrics and `check`."""

    events_by_type: dict[str, int] = field(default_factory=dict)
    deliveries_by_state: dict[str, int] = field(default_factory=dict)
    backlog_by_endpoint: dict[str, int] = field(default_factory=dict)
    disabled: list[Endpoint] = field(default_factory=list)
    oldest_undelivered: datetime | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


# Built once: constructing it per call (coercing every value) cost more than the write.
_INSERT_EVENTS = events.insert()


def write_events(conn: Connection, new: Sequence[NewEvent], now: datetime | None = None) -> int:
    """Insert `new` in `conn`'s transaction; how many events.

    One INSERT; the database's `events_fan_out` trigger (`schema.fan_out_ddl`)
    adds their delivery rows for the subscribed endpoints in the same statement.
    Plus one INSERT of the live rows of the changes a page shows (`live.write_live`).
    """
    if not new:
        return 0
    now = now or utcnow()
    stamp = time.time()
    rows = [
        {
            "id": new_event_id(stamp),
            "type": e.type,
            "timestamp": now,
            "data": json.dumps(e.data, separators=(",", ":"), default=str),
            "message_sid": e.message_sid,
            "created_at": now,
        }
        for e in new
    ]
    conn.execute(_INSERT_EVENTS, rows)
    # What a live page shows of them (GET /api/stream), in the same transaction.
    write_live(conn, live_rows(((e.type, e.message_sid, e.data) for e in new), now))
    return len(new)


class EventOutbox(IndexCore):
    """Endpoints, the event log, and deliveries as leased work."""

    # -- endpoints ------------------------------------------------------------

    @translate_db_errors
    def add_endpoint(
        self,
        url: str,
        *,
        types: Iterable[str] | None = None,
        description: str = "",
        secret: str,
        source: str = "api",
        endpoint_id: str | None = None,
    ) -> Endpoint:
        """Create an endpoint; it gets the events written from now on."""
        values = {
            "id": endpoint_id or new_endpoint_id(),
            "url": url,
            "events": events_column(types),
            "secret": secret,
            "enabled": True,
            "description": description,
            "source": source,
            "created_at": utcnow(),
        }
        with self.begin() as conn:
            conn.execute(endpoints.insert().values(values))
            row = conn.execute(select(endpoints).where(endpoints.c.id == values["id"])).mappings()
            added = Endpoint.from_row(row.one())
        self.forget_endpoints_hint()
        return added

    @translate_db_errors
    def put_env_endpoint(self, endpoint_id: str, url: str, secret: str) -> Endpoint:
        """Create or update the endpoint declared by the environment (every type)."""
        with self.begin() as conn:
            found = conn.execute(select(endpoints.c.id).where(endpoints.c.id == endpoint_id))
            if found.first() is None:
                conn.execute(
                    endpoints.insert().values(
                        id=endpoint_id,
                        url=url,
                        events="*",
                        secret=secret,
                        enabled=True,
                        description="RECEIVER_EVENT_URL",
                        source="env",
                        created_at=utcnow(),
                    )
                )
            else:
                conn.execute(
                    update(endpoints)
                    .where(
                        endpoints.c.id == endpoint_id,
                        or_(endpoints.c.url != url, endpoints.c.secret != secret),
                    )
                    .values(url=url, secret=secret, enabled=True, disabled_reason=None)
                )
            row = conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id)).mappings()
            declared = Endpoint.from_row(row.one())
        self.forget_endpoints_hint()
        return declared

    @translate_db_errors
    def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        """One endpoint, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id)).mappings()
            found = row.first()
        return Endpoint.from_row(found) if found else None

    @translate_db_errors
    def list_endpoints(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(endpoints).order_by(endpoints.c.created_at, endpoints.c.id)
            ).mappings()
            return [Endpoint.from_row(r) for r in rows]

    @translate_db_errors
    def has_endpoints(self) -> bool:
        """Whether any endpoint is enabled."""
        with self.engine.connect() as conn:
            found = conn.execute(select(endpoints.c.id).where(endpoints.c.enabled.is_(True)))
            return found.first() is not None

    @translate_db_errors
    def remove_endpoint(self, endpoint_id: str) -> bool:
        """Delete an endpoint and its deliveries: it gets nothing more."""
        with self.begin() as conn:
            conn.execute(
                delete(event_deliveries).where(event_deliveries.c.endpoint_id == endpoint_id)
            )
            result = conn.execute(delete(endpoints).where(endpoints.c.id == endpoint_id))
            return bool(result.rowcount)

    @translate_db_errors
    def rotate_secret(self, endpoint_id: str, secret: str, *, overlap: timedelta) -> bool:
        """Sign with `secret` from now on, and with the old one too for `overlap`."""
        now = utcnow()
        with self.begin() as conn:
            result = conn.execute(
                update(endpoints)
                .where(endpoints.c.id == endpoint_id)
                .values(
                    previous_secret=endpoints.c.secret,
                    previous_secret_expires_at=now + overlap,
                    secret=secret,
                )
            )
            return bool(result.rowcount)

    @translate_db_errors
    def test_endpoint(self, endpoint_id: str, data: Mapping[Any, Any]) -> str | None:
        """Write an `endpoint.test` event due to this endpoint only; its id (None: no endpoint)."""
        now = utcnow()
        event_id = new_event_id()
        with self.begin() as conn:
            if (
                conn.execute(select(endpoints.c.id).where(endpoints.c.id == endpoint_id)).first()
                is None
            ):
                return None
            conn.execute(
                events.insert().values(
                    id=event_id,
                    type="endpoint.test",
                    timestamp=now,
                    data=json.dumps(dict(data), separators=(",", ":")),
                    message_sid=None,
                    created_at=now,
                )
            )
            conn.execute(
                event_deliveries.insert().values(
                    event_id=event_id,
                    endpoint_id=endpoint_id,
                    state="pending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        self.forget_endpoints_hint()
        self.notify_events(1)
        return event_id

    @translate_db_errors
    def replay(
        self,
        endpoint_id: str,
        *,
        event_id: str | None = None,
        since: datetime | None = None,
    ) -> int:
        """Deliver events again to one endpoint (re-enabling it); how many are due.

        `event_id` names one event (any type); `since` takes every event the
        endpoint is subscribed to created from then on. Each gets a fresh
        retry budget and keeps its id, so the receiver can deduplicate.
        """
        now = utcnow()
        with self.begin() as conn:
            endpoint = (
                conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))
                .mappings()
                .first()
            )
            if endpoint is None:
                return 0
            if event_id is not None:
                cond: Any = events.c.id == event_id
            elif since is not None:
                # The subscription rule of `schema.fan_out_ddl`, for past events.
                cond = and_(
                    events.c.created_at >= since,
                    events.c.type != "endpoint.test",
                    or_(
                        literal(endpoint["events"]) == "*",
                        literal(endpoint["events"]).like(
                            literal("%,") + events.c.type + literal(",%")
                        ),
                    ),
                )
            else:
                raise ValueError("replay needs an event id or a start time")
            ids = list(conn.execute(select(events.c.id).where(cond)).scalars())
            if not ids:
                return 0
            conn.execute(
                update(endpoints)
                .where(endpoints.c.id == endpoint_id)
                .values(enabled=True, disabled_reason=None)
            )
            fresh = {
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "lease_owner": None,
                "lease_until": None,
            }
            stmt = self._insert(event_deliveries).values(
                [
                    {"event_id": i, "endpoint_id": endpoint_id, "created_at": now, **fresh}
                    for i in ids
                ]
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["event_id", "endpoint_id"],
                    set_={k: stmt.excluded[k] for k in fresh},
                )
            )
        self.forget_endpoints_hint()
        self.notify_events(len(ids))
        return len(ids)

    # -- reading ------------------------------------------------------------------

    @translate_db_errors
    def list_events(
        self,
        *,
        before: str | None = None,
        limit: int = 50,
        type: str | None = None,
        state: str | None = None,
    ) -> list[EventRecord]:
        """Events newest first (keyset on the time-ordered id), with their deliveries.

        `state` keeps events with at least one delivery in that state
        (`failed`: some endpoint did not get it after its last retry).
        """
        stmt = select(events).order_by(events.c.id.desc()).limit(limit)
        if before:
            stmt = stmt.where(events.c.id < before)
        if type:
            stmt = stmt.where(events.c.type == type)
        if state:
            stmt = stmt.where(
                events.c.id.in_(
                    select(event_deliveries.c.event_id).where(event_deliveries.c.state == state)
                )
            )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
            by_event: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
            if by_event:
                found = conn.execute(
                    select(event_deliveries)
                    .where(event_deliveries.c.event_id.in_(list(by_event)))
                    .order_by(event_deliveries.c.id)
                ).mappings()
                for d in found:
                    by_event[d["event_id"]].append(_delivery(d))
        return [event_record(r, deliveries=by_event[r["id"]]) for r in rows]

    @translate_db_errors
    def get_event(self, event_id: str) -> EventRecord | None:
        """One event with its deliveries and every attempt."""
        with self.engine.connect() as conn:
            row = conn.execute(select(events).where(events.c.id == event_id)).mappings().first()
            if row is None:
                return None
            found = conn.execute(
                select(event_deliveries)
                .where(event_deliveries.c.event_id == event_id)
                .order_by(event_deliveries.c.id)
            ).mappings()
            deliveries = [_delivery(d) for d in found]
            tried = conn.execute(
                select(event_attempts)
                .where(event_attempts.c.event_id == event_id)
                .order_by(event_attempts.c.id)
            ).mappings()
            attempts = [
                {
                    "endpoint_id": a["endpoint_id"],
                    "attempt": a["attempt"],
                    "at": _iso(a["at"]),
                    "status": a["status"],
                    "error": a["error"],
                    "response": a["response"],
                    "duration_ms": a["duration_ms"],
                }
                for a in tried
            ]
        return event_record(row, deliveries=deliveries, attempts=attempts)

    @translate_db_errors
    def recent_deliveries(
        self, limit: int = 50, *, state: str | None = None
    ) -> list[dict[str, Any]]:
        """The latest deliveries (newest first) with their event's type."""
        stmt = (
            select(event_deliveries, events.c.type)
            .join(events, events.c.id == event_deliveries.c.event_id)
            .order_by(event_deliveries.c.id.desc())
            .limit(limit)
        )
        if state:
            stmt = stmt.where(event_deliveries.c.state == state)
        with self.engine.connect() as conn:
            return [{**_delivery(r), "type": r["type"]} for r in conn.execute(stmt).mappings()]

    @translate_db_errors
    def event_figures(self) -> Figures:
        """Counts for /metrics and `check`, in a few grouped queries."""
        figures = Figures()
        with self.engine.connect() as conn:
            for t, n in conn.execute(select(events.c.type, func.count()).group_by(events.c.type)):
                figures.events_by_type[str(t)] = int(n)
            for s, n in conn.execute(
                select(event_deliveries.c.state, func.count()).group_by(event_deliveries.c.state)
            ):
                figures.deliveries_by_state[str(s)] = int(n)
            for p, n in conn.execute(
                select(event_deliveries.c.endpoint_id, func.count())
                .where(event_deliveries.c.state == "pending")
                .group_by(event_deliveries.c.endpoint_id)
            ):
                figures.backlog_by_endpoint[str(p)] = int(n)
            figures.disabled = [
                Endpoint.from_row(r)
                for r in conn.execute(
                    select(endpoints).where(endpoints.c.enabled.is_(False))
                ).mappings()
            ]
            figures.oldest_undelivered = conn.execute(
                select(func.min(events.c.created_at)).where(
                    events.c.id.in_(
                        select(event_deliveries.c.event_id).where(
                            event_deliveries.c.state.in_(("pending", "failed"))
                        )
                    )
                )
            ).scalar()
        if isinstance(figures.oldest_undelivered, str):  # SQLite's min() loses the type
            figures.oldest_undelivered = UTCDateTime().process_result_value(
                figures.oldest_undelivered, self.engine.dialect
            )
        return figures


def delete_events_of(conn: Connection, message_sid: str) -> None:
    """Delete a message's events with their deliveries and attempts (erasure)."""
    mine = select(events.c.id).where(events.c.message_sid == message_sid)
    conn.execute(delete(event_attempts).where(event_attempts.c.event_id.in_(mine)))
    conn.execute(delete(event_deliveries).where(event_deliveries.c.event_id.in_(mine)))
    conn.execute(delete(events).where(events.c.message_sid == message_sid))
    delete_live_of(conn, message_sid)


def event_record(
    row: Mapping[Any, Any],
    *,
    deliveries: Sequence[dict[str, Any]] = (),
    attempts: Sequence[dict[str, Any]] = (),
) -> EventRecord:
    return EventRecord(
        id=row["id"],
        type=row["type"],
        timestamp=row["timestamp"],
        data=json.loads(row["data"]),
        created_at=row["created_at"],
        message_sid=row["message_sid"],
        deliveries=tuple(deliveries),
        attempts=tuple(attempts),
    )


def _delivery(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "event_id": row["event_id"],
        "endpoint_id": row["endpoint_id"],
        "state": row["state"],
        "attempts": row["attempts"],
        "next_attempt_at": _iso(row["next_attempt_at"]) if row["state"] == "pending" else None,
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "delivered_at": _iso(row["delivered_at"]),
    }
