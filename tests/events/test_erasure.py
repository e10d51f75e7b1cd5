"""Erasing a message (`erase_message`, `purge`) leaves none of its events behind."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from receiver.index import MediaIndex
from receiver.index.event_queue import Outcome
from receiver.index.schema import event_attempts, event_deliveries, events, utcnow
from receiver.lifecycle import erase_message, purge
from receiver.storage import open_store
from tests.index.rows import media_rows, message, sid


def _left(index: MediaIndex, message_sid: str) -> tuple[int, int, int]:
    mine = select(events.c.id).where(events.c.message_sid == message_sid)
    with index.engine.connect() as conn:
        return (
            conn.execute(
                select(func.count()).select_from(events).where(events.c.id.in_(mine))
            ).scalar_one(),
            conn.execute(
                select(func.count())
                .select_from(event_deliveries)
                .where(event_deliveries.c.event_id.in_(mine))
            ).scalar_one(),
            conn.execute(
                select(func.count())
                .select_from(event_attempts)
                .where(event_attempts.c.event_id.in_(mine))
            ).scalar_one(),
        )


def test_erase_and_purge_remove_events_deliveries_and_attempts(db_url: str, tmp_path: Path) -> None:
    index = MediaIndex.open(db_url)
    store = open_store((tmp_path / "media").as_uri())
    try:
        endpoint = index.add_endpoint("https://a.example.com/", secret="whsec_x")
        index.record_message(message(1, num_media=0), [])
        items = index.insert_message(message(2), media_rows(1), lease_owner="w", lease_seconds=60)
        assert items is not None
        index.finish_media(items[0].id, "w", state="rejected", reason="empty")
        index.record_keyword("+15550001111", "+15550002222", "STOP", sid(2))
        index.record_message(message(3, num_media=0), [])
        claimed = index.claim_deliveries("d", lease_seconds=60, limit=100)
        index.record_outcomes(
            "d",
            [
                Outcome(c.delivery_id, c.event.id, endpoint.id, 1, ok=False, status=500)
                for c in claimed
            ],
        )
        assert _left(index, sid(1)) == (2, 2, 2)
        assert _left(index, sid(2)) == (4, 4, 4)  # received, rejected, completed, opt-out
        first = index.get_message(sid(1))
        assert first is not None
        erase_message(index, store, first)
        assert _left(index, sid(1)) == (0, 0, 0)
        assert _left(index, sid(2)) == (4, 4, 4)
        report = purge(index, store, utcnow() + timedelta(seconds=1), dry_run=False)
        assert report.messages == 2
        assert _left(index, sid(2)) == (0, 0, 0) and _left(index, sid(3)) == (0, 0, 0)
        assert index.list_events() == []
    finally:
        index.close()
