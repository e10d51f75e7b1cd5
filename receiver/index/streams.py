"""Event Streams deliveries in the index: one row per CloudEvent id (SQLAlchemy Core)."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from receiver.index.errors import translate_db_errors
from receiver.index.schema import stream_events, utcnow
from receiver.twilio.webhook import CloudEvent


class StreamIndex:
    """Claims each CloudEvent id once and keeps what became of it."""

    def __init__(
        self, engine: Engine, *, begin: Callable[[], AbstractContextManager[Connection]]
    ) -> None:
        self.engine = engine
        self._begin = begin

    @translate_db_errors
    def claim(self, event: CloudEvent) -> bool:
        """Record the event; False when its id was already delivered (a duplicate)."""
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert(stream_events)
            .values(
                id=event.id,
                type=event.type,
                source=event.source,
                time=event.time,
                data=json.dumps(event.data),
                received_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(stream_events.c.id)
        )
        with self._begin() as conn:
            return conn.execute(stmt).first() is not None

    @translate_db_errors
    def finish(self, event_id: str, outcome: str, detail: str | None = None) -> None:
        """Note what handling the event did."""
        with self._begin() as conn:
            conn.execute(
                update(stream_events)
                .where(stream_events.c.id == event_id)
                .values(outcome=outcome, detail=detail[:500] if detail else None)
            )

    @translate_db_errors
    def release(self, event_id: str) -> None:
        """Forget a claim whose handling failed, so the redelivery is handled."""
        with self._begin() as conn:
            conn.execute(delete(stream_events).where(stream_events.c.id == event_id))

    @translate_db_errors
    def get(self, event_id: str) -> dict[str, Any] | None:
        """One delivered event as stored, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(stream_events).where(stream_events.c.id == event_id))
            found = row.mappings().first()
        return dict(found) if found else None

    @translate_db_errors
    def count(self) -> int:
        """How many distinct events were delivered."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(stream_events)).scalar() or 0)

    @translate_db_errors
    def test_ids(self, event_type: str, since: datetime) -> list[str]:
        """The `data.test_id` of sink test events received since `since`, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(stream_events.c.data)
                .where(stream_events.c.type == event_type, stream_events.c.received_at >= since)
                .order_by(stream_events.c.received_at.desc())
            )
            found = [json.loads(r[0]) for r in rows]
        return [str(d["test_id"]) for d in found if isinstance(d, dict) and d.get("test_id")]
