"""The delivery queue of the events outbox: claims with leases, outcomes, disabling.

Deliveries are claimed like media items: one atomic `UPDATE ... RETURNING`
(PostgreSQL: `FOR UPDATE SKIP LOCKED`) that leases them to one process
until `lease_until`, so two processes never deliver the same attempt at
once, and a crashed process's claims are taken over once the lease ends.
Claims and outcomes are bookkeeping that a power cut may roll back without
harm (an event is sent again), so they commit without a flush
(`IndexCore.begin_unflushed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Update

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.events import RESPONSE_KEEP, Endpoint, EventRecord, event_record
from receiver.index.schema import endpoints, event_attempts, event_deliveries, events, utcnow


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to this process, with its event and endpoint."""

    delivery_id: int
    attempt: int  # this attempt's number, from 1
    event: EventRecord
    endpoint: Endpoint


@dataclass(frozen=True)
class Outcome:
    """How one claimed delivery went.

    `attempted` False means it was not tried (its endpoint failed earlier in
    the batch): the attempt is given back and the delivery is due at
    `next_attempt_at`. A failure with `next_attempt_at` None has spent its
    retries. `disable` names why the endpoint must stop (410, no success
    for too long).
    """

    delivery_id: int
    event_id: str
    endpoint_id: str
    attempt: int
    ok: bool
    status: int | None = None
    error: str | None = None
    response: str | None = None
    duration_ms: int | None = None
    next_attempt_at: datetime | None = None
    attempted: bool = True
    disable: str | None = None


# Outcomes of a batch, as executemany statements built once.
_FINISH = (
    update(event_deliveries)
    .where(event_deliveries.c.id == bindparam("_id"))
    .values(
        state=bindparam("_state"),
        next_attempt_at=bindparam("_due", type_=event_deliveries.c.next_attempt_at.type),
        lease_owner=None,
        lease_until=None,
        last_status=bindparam("_status", type_=event_deliveries.c.last_status.type),
        last_error=bindparam("_error", type_=event_deliveries.c.last_error.type),
        last_response=bindparam("_response", type_=event_deliveries.c.last_response.type),
        delivered_at=bindparam("_delivered", type_=event_deliveries.c.delivered_at.type),
    )
)
# A delivery not tried (its endpoint failed earlier in the batch): the attempt is given back.
_GIVE_BACK = (
    update(event_deliveries)
    .where(event_deliveries.c.id == bindparam("_id"))
    .values(
        attempts=event_deliveries.c.attempts - 1,
        next_attempt_at=bindparam("_due", type_=event_deliveries.c.next_attempt_at.type),
        lease_owner=None,
        lease_until=None,
    )
)


# The statements of every batch, built once: building a statement and its cache
# key costs more CPU than running it (docs/performance.md, "Events out").
_NOW = bindparam("_now", type_=event_deliveries.c.next_attempt_at.type)
_DUE = and_(
    event_deliveries.c.state == "pending",
    event_deliveries.c.next_attempt_at
    <= bindparam("_now", type_=event_deliveries.c.next_attempt_at.type),
    or_(
        event_deliveries.c.lease_until.is_(None),
        event_deliveries.c.lease_until < _NOW,
    ),
    event_deliveries.c.endpoint_id.in_(select(endpoints.c.id).where(endpoints.c.enabled.is_(True))),
)
_ANY_DUE = select(event_deliveries.c.id).where(_DUE).limit(1)
_EVENTS_BY_ID = select(events).where(events.c.id.in_(bindparam("_ids", expanding=True)))
_ENDPOINTS_BY_ID = select(endpoints).where(endpoints.c.id.in_(bindparam("_ids", expanding=True)))
_HELD_BY = select(event_deliveries.c.id).where(
    event_deliveries.c.id.in_(bindparam("_ids", expanding=True)),
    event_deliveries.c.lease_owner == bindparam("_owner"),
)
_SUCCEEDED = (
    update(endpoints)
    .where(endpoints.c.id.in_(bindparam("_ids", expanding=True)))
    .values(last_success_at=bindparam("_now", type_=endpoints.c.last_success_at.type))
)


def _claim_statement(dialect: str, limit: int) -> Update:
    """Lease up to `limit` due deliveries to `_owner` until `_until`, returning them."""
    pick = (
        select(event_deliveries.c.id)
        .where(_DUE)
        .order_by(event_deliveries.c.next_attempt_at, event_deliveries.c.id)
        .limit(limit)
    )
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    return (
        update(event_deliveries)
        .where(event_deliveries.c.id.in_(pick.scalar_subquery()))
        .values(
            lease_owner=bindparam("_owner"),
            lease_until=bindparam("_until", type_=event_deliveries.c.lease_until.type),
            attempts=event_deliveries.c.attempts + 1,
        )
        .returning(
            event_deliveries.c.id,
            event_deliveries.c.event_id,
            event_deliveries.c.endpoint_id,
            event_deliveries.c.attempts,
        )
    )


#: Claim statements by (dialect, batch size).
_CLAIMS: dict[tuple[str, int], Update] = {}


class EventQueue(IndexCore):
    """Due deliveries, leased to one process at a time, and how each attempt went."""

    @translate_db_errors
    def deliveries_due(self, now: datetime | None = None) -> bool:
        """Whether any delivery is due and unleased (a read, before taking the writer)."""
        with self.engine.connect() as conn:
            found = conn.execute(_ANY_DUE, {"_now": now or utcnow()})
            return found.first() is not None

    @translate_db_errors
    def claim_deliveries(
        self, owner: str, *, lease_seconds: float, limit: int = 50, now: datetime | None = None
    ) -> list[Claimed]:
        """Atomically lease up to `limit` due deliveries of enabled endpoints."""
        now = now or utcnow()
        stmt = _CLAIMS.get((self.dialect, limit))
        if stmt is None:
            stmt = _CLAIMS[(self.dialect, limit)] = _claim_statement(self.dialect, limit)
        until = now + timedelta(seconds=lease_seconds)
        with self.begin_unflushed() as conn:
            claimed = conn.execute(stmt, {"_now": now, "_owner": owner, "_until": until}).all()
        if not claimed:
            return []
        with self.engine.connect() as conn:
            found = conn.execute(_EVENTS_BY_ID, {"_ids": sorted({c[1] for c in claimed})})
            by_event = {r["id"]: event_record(r) for r in found.mappings()}
            points = conn.execute(_ENDPOINTS_BY_ID, {"_ids": sorted({c[2] for c in claimed})})
            by_endpoint = {r["id"]: Endpoint.from_row(r) for r in points.mappings()}
        out = [
            Claimed(int(d), int(n), by_event[e], by_endpoint[p])
            for d, e, p, n in claimed
            if e in by_event and p in by_endpoint
        ]
        return sorted(out, key=lambda c: (c.event.id, c.endpoint.id))

    @translate_db_errors
    def record_outcomes(self, owner: str, outcomes: Sequence[Outcome]) -> int:
        """Record a batch's outcomes in one transaction; how many leases were still held.

        Only the current lease holder may write, so a process whose lease
        ran out cannot overwrite the outcome of the one that took over.
        """
        if not outcomes:
            return 0
        now = utcnow()
        disabled: dict[str, str] = {}
        succeeded: set[str] = set()
        with self.begin_unflushed() as conn:
            # Which leases this owner still holds (locked on PostgreSQL until commit);
            # then one executemany per kind of outcome, not a statement per delivery.
            mine_stmt = _HELD_BY.with_for_update() if self.dialect == "postgresql" else _HELD_BY
            ids = [o.delivery_id for o in outcomes]
            mine = set(conn.execute(mine_stmt, {"_ids": ids, "_owner": owner}).scalars())
            held = [o for o in outcomes if o.delivery_id in mine]
            untried = [o for o in held if not o.attempted]
            tried = [o for o in held if o.attempted]
            if untried:
                conn.execute(
                    _GIVE_BACK,
                    [{"_id": o.delivery_id, "_due": o.next_attempt_at or now} for o in untried],
                )
            if tried:
                conn.execute(
                    _FINISH,
                    [
                        {
                            "_id": o.delivery_id,
                            "_state": "delivered"
                            if o.ok
                            else ("pending" if o.next_attempt_at is not None else "failed"),
                            "_due": None if o.ok else o.next_attempt_at,
                            "_status": o.status,
                            "_error": o.error,
                            "_response": (o.response or "")[:RESPONSE_KEEP] or None,
                            "_delivered": now if o.ok else None,
                        }
                        for o in tried
                    ],
                )
                conn.execute(
                    event_attempts.insert(),
                    [
                        {
                            "event_id": o.event_id,
                            "endpoint_id": o.endpoint_id,
                            "attempt": o.attempt,
                            "at": now,
                            "status": o.status,
                            "error": o.error,
                            "response": (o.response or "")[:RESPONSE_KEEP] or None,
                            "duration_ms": o.duration_ms,
                        }
                        for o in tried
                    ],
                )
            for o in tried:
                if o.ok:
                    succeeded.add(o.endpoint_id)
                elif o.disable:
                    disabled[o.endpoint_id] = o.disable
            if succeeded:
                conn.execute(_SUCCEEDED, {"_ids": sorted(succeeded), "_now": now})
            # Last, so deliveries of the batch given back above are abandoned too.
            for endpoint_id, reason in disabled.items():
                _disable(conn, endpoint_id, reason)
        return len(held)

    @translate_db_errors
    def disable_endpoint(self, endpoint_id: str, reason: str) -> None:
        """Stop delivering to an endpoint; its pending deliveries are abandoned."""
        with self.begin() as conn:
            _disable(conn, endpoint_id, reason)


def _disable(conn: Connection, endpoint_id: str, reason: str) -> None:
    conn.execute(
        update(endpoints)
        .where(endpoints.c.id == endpoint_id)
        .values(enabled=False, disabled_reason=reason)
    )
    conn.execute(
        update(event_deliveries)
        .where(event_deliveries.c.endpoint_id == endpoint_id, event_deliveries.c.state == "pending")
        .values(state="abandoned", lease_owner=None, lease_until=None)
    )
