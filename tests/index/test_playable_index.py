"""receiver.index.playable: copy rows, claims, the sweep's query and erasure, on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update

from receiver.index import MediaIndex
from receiver.index.queries import MessageFilter, list_messages
from receiver.index.records import MessageRecord
from receiver.index.schema import media, playable_media, utcnow
from receiver.index.serialize import media_json
from tests.index.rows import media_rows, message, sid


def stored_av(index: MediaIndex, n: int = 1, *, kinds: tuple[str, ...] = ("audio",)) -> list[int]:
    """Items of message `n`, stored an hour ago with the given kinds; their ids."""
    items = index.insert_message(message(n), media_rows(len(kinds)))
    assert items is not None
    with index.begin() as conn:
        for item, kind in zip(items, kinds, strict=True):
            conn.execute(
                update(media)
                .where(media.c.id == item.id)
                .values(
                    state="stored",
                    kind=kind,
                    storage_key=f"media/x/{item.id}",
                    updated_at=utcnow() - timedelta(hours=1),
                )
            )
    return [item.id for item in items]


def age(index: MediaIndex, media_id: int, seconds: float) -> None:
    with index.begin() as conn:
        conn.execute(
            update(playable_media)
            .where(playable_media.c.media_id == media_id)
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def test_queue_once_then_finish(index: MediaIndex) -> None:
    (item,) = stored_av(index)
    assert index.playable(item) is None
    assert index.queue_playable(item) is True
    assert index.queue_playable(item) is False  # another process, another delivery
    copy = index.playable(item)
    assert copy is not None and (copy.state, copy.attempts) == ("pending", 1)
    index.finish_playable(
        item, state="ready", storage_key="derived/x.m4a", content_type="audio/mp4", size_bytes=9
    )
    copy = index.playable(item)
    assert copy is not None
    assert (copy.state, copy.storage_key, copy.content_type, copy.size_bytes) == (
        "ready",
        "derived/x.m4a",
        "audio/mp4",
        9,
    )
    assert index.playable_of(sid(1)) == {item: copy}
    with pytest.raises(ValueError, match="ready, original or failed"):
        index.finish_playable(item, state="pending")


def test_sweep_finds_items_without_a_row_and_abandoned_claims(index: MediaIndex) -> None:
    audio, video, image = stored_av(index, kinds=("audio", "video", "image"))
    found = index.missing_playable(10, older_than=60, stale_after=600)
    assert sorted(m.id for m in found) == [audio, video]  # never an image
    index.queue_playable(audio)
    index.queue_playable(video)
    assert index.missing_playable(10, older_than=60, stale_after=600) == []
    age(index, audio, 700)  # its process died mid-copy
    assert [m.id for m in index.missing_playable(10, older_than=60, stale_after=600)] == [audio]
    assert index.claim_stale_playable(video, older_than=600, max_attempts=3) is False  # fresh
    assert index.claim_stale_playable(audio, older_than=600, max_attempts=3) is True
    assert index.claim_stale_playable(audio, older_than=600, max_attempts=3) is False  # taken
    copy = index.playable(audio)
    assert copy is not None and copy.attempts == 2


def test_out_of_attempts_is_failed_gave_up(index: MediaIndex) -> None:
    (item,) = stored_av(index)
    index.queue_playable(item)
    for _ in range(2):
        age(index, item, 700)
        assert index.claim_stale_playable(item, older_than=600, max_attempts=3)
    age(index, item, 700)
    assert index.claim_stale_playable(item, older_than=600, max_attempts=3) is False
    copy = index.playable(item)
    assert copy is not None and (copy.state, copy.reason) == ("failed", "gave_up")
    assert index.missing_playable(10, older_than=60, stale_after=600) == []


def test_deleting_a_message_deletes_its_copy_rows(index: MediaIndex) -> None:
    (item,) = stored_av(index)
    (other,) = stored_av(index, 2)
    index.queue_playable(item)
    index.queue_playable(other)
    assert index.delete_message(sid(1))
    with index.engine.connect() as conn:
        left = conn.execute(select(playable_media.c.media_id)).scalars().all()
    assert left == [other]


def _playable_of(record: MessageRecord) -> list[dict[str, object] | None]:
    return [media_json(m)["playable"] for m in record.media]


def test_media_json_carries_the_copy_state_of_audio_and_video(index: MediaIndex) -> None:
    kinds = ("audio", "video", "video", "audio", "video", "image")
    ids = stored_av(index, kinds=kinds)
    # ids[0]: no copy row yet; ids[1..3]: each finished state; ids[4]: queued.
    for media_id in ids[1:5]:
        assert index.queue_playable(media_id)
    index.finish_playable(ids[1], state="ready", storage_key="k.mp4", content_type="video/mp4")
    index.finish_playable(ids[2], state="failed", reason="timeout", detail="over 120 s")
    index.finish_playable(ids[3], state="original")
    record = index.get_message(sid(1))
    assert record is not None
    url = [f"/api/media/{media_id}/playable" for media_id in ids]
    assert _playable_of(record) == [
        {"state": "pending", "url": url[0], "reason": None},
        {"state": "ready", "url": url[1], "reason": None},
        {"state": "failed", "url": url[2], "reason": "timeout"},
        {"state": "not_needed", "url": url[3], "reason": None},
        {"state": "pending", "url": url[4], "reason": None},
        None,  # an image has no playable copy
    ]
    # The list of messages says the same, as does one item read alone.
    (listed,) = list_messages(index, MessageFilter()).rows
    assert _playable_of(listed) == _playable_of(record)
    alone = index.get_media(ids[2])
    assert alone is not None
    assert media_json(alone)["playable"] == {"state": "failed", "url": url[2], "reason": "timeout"}


def test_an_item_that_is_not_stored_has_nothing_to_play(index: MediaIndex) -> None:
    (rejected, ready) = stored_av(index, kinds=("video", "audio"))
    assert index.queue_playable(ready)
    index.finish_playable(ready, state="ready", storage_key="k.m4a", content_type="audio/mp4")
    with index.begin() as conn:
        conn.execute(
            update(media)
            .where(media.c.id.in_((rejected, ready)))
            .values(state="rejected", reason="malware", storage_key=None)
        )
    record = index.get_message(sid(1))
    assert record is not None
    # A copy made before a rescan found malware is no longer offered as ready.
    assert [p and (p["state"], p["reason"]) for p in _playable_of(record)] == [
        ("failed", "malware"),
        ("failed", "malware"),
    ]


def test_a_page_of_messages_costs_the_same_queries_however_many_copies_it_has(
    index: MediaIndex,
) -> None:
    def statements_listing() -> tuple[int, list[MessageRecord]]:
        seen: list[str] = []

        def count(*args: object) -> None:
            seen.append(str(args[2]))

        event.listen(index.engine, "before_cursor_execute", count)
        try:
            rows = list_messages(index, MessageFilter(), limit=50).rows
        finally:
            event.remove(index.engine, "before_cursor_execute", count)
        return len(seen), rows

    for media_id in stored_av(index, 1, kinds=("audio", "video")):
        index.queue_playable(media_id)
    few, rows = statements_listing()
    assert sum(1 for r in rows for m in r.media if m.playable_state) == 2
    for n in range(2, 12):
        for media_id in stored_av(index, n, kinds=("audio", "video", "video")):
            index.queue_playable(media_id)
            index.finish_playable(media_id, state="original")
    many, rows = statements_listing()
    assert len(rows) == 11
    assert sum(1 for r in rows for m in r.media if m.playable_state) == 32
    assert many == few


def _playable_events(index: MediaIndex) -> list[dict[str, Any]]:
    return [e.data for e in reversed(index.list_events(type="media.playable"))]


def test_each_final_copy_state_writes_one_media_playable_event(index: MediaIndex) -> None:
    ready, failed, plays, stuck = stored_av(index, kinds=("video", "audio", "audio", "video"))
    for media_id in (ready, failed, plays, stuck):
        index.queue_playable(media_id)
    assert _playable_events(index) == []  # pending is no event: media.stored said so
    index.finish_playable(ready, state="ready", storage_key="k.mp4", content_type="video/mp4")
    index.finish_playable(failed, state="failed", reason="unreadable", detail="no audio track")
    index.finish_playable(plays, state="original")
    for claimed in (True, False):  # the second takeover gives up
        age(index, stuck, 700)
        assert index.claim_stale_playable(stuck, older_than=600, max_attempts=2) is claimed
    sent = _playable_events(index)
    assert [(e["id"], e["message_sid"], e["playable"]["state"]) for e in sent] == [
        (ready, sid(1), "ready"),
        (failed, sid(1), "failed"),
        (plays, sid(1), "not_needed"),
        (stuck, sid(1), "failed"),
    ]
    assert sent[1]["playable"]["reason"] == "unreadable"
    assert sent[3]["playable"] == {
        "state": "failed",
        "url": f"/api/media/{stuck}/playable",
        "reason": "gave_up",
    }
    # The event carries the whole media object, as media.stored does.
    assert sent[0]["kind"] == "video" and sent[0]["state"] == "stored"
