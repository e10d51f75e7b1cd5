"""receiver.index.media_queue on SQLite and PostgreSQL: atomic claims, leases, outcomes, retries."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import event

from receiver.index import MediaIndex
from receiver.index.schema import utcnow
from tests.index.rows import ACCOUNT, media_rows, message, sid


def test_claims_never_overlap(index: MediaIndex) -> None:
    for n in range(10):
        index.record_message(message(100 + n), media_rows(3))
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def claim(owner: str) -> None:
        barrier.wait()
        got: list[int] = []
        while rows := index.claim_media(owner, lease_seconds=60, limit=3, max_attempts=5):
            got.extend(r.id for r in rows)
        claimed[owner] = got

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [i for ids in claimed.values() for i in ids]
    assert len(all_ids) == 30
    assert len(set(all_ids)) == 30


def test_only_lease_holder_finishes_and_expired_lease_is_taken_over(index: MediaIndex) -> None:
    index.record_message(message(3), media_rows(1))
    (row,) = index.claim_media("a", lease_seconds=60, limit=5, max_attempts=5)
    assert index.claim_media("b", lease_seconds=60, limit=5, max_attempts=5) == []
    later = utcnow() + timedelta(seconds=61)
    (again,) = index.claim_media("b", lease_seconds=60, limit=5, max_attempts=5, now=later)
    assert again.id == row.id and again.attempts == 2
    assert index.finish_media(row.id, "a", state="stored") is False
    assert index.finish_media(row.id, "b", state="stored", sha256="0" * 64) is True
    got = index.get_message(sid(3))
    assert got is not None and got.state == "complete"
    assert got.media[0].lease_owner is None


def test_failed_items_wait_for_their_retry_time_and_respect_attempts(index: MediaIndex) -> None:
    index.record_message(message(4), media_rows(1))
    (row,) = index.claim_media("a", lease_seconds=60, limit=1, max_attempts=2)
    retry_at = utcnow() + timedelta(seconds=30)
    index.finish_media(row.id, "a", state="failed", reason="fetch_failed", next_attempt_at=retry_at)
    assert index.get_message(sid(4)).state  # type: ignore[union-attr] == "incomplete"
    assert index.claim_media("a", lease_seconds=60, limit=1, max_attempts=2) == []
    (second,) = index.claim_media(
        "a", lease_seconds=60, limit=1, max_attempts=2, now=retry_at + timedelta(seconds=1)
    )
    index.finish_media(second.id, "a", state="failed", reason="fetch_failed")
    # Two attempts used: nothing more is claimed until `retry` re-queues it.
    assert (
        index.claim_media(
            "a", lease_seconds=60, limit=1, max_attempts=2, now=retry_at + timedelta(hours=1)
        )
        == []
    )
    assert index.requeue_failed(sid(4)) == 1
    assert len(index.claim_media("a", lease_seconds=60, limit=1, max_attempts=2)) == 1
    assert index.backlog() == {"failed": 1}


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (("stored", "rejected", "stored"), "complete"),
        (("stored", "failed", "rejected"), "incomplete"),
        (("failed", "failed", "failed"), "incomplete"),
        (("stored", "pending", "failed"), "pending"),
        (("pending", "pending", "stored"), "pending"),
    ],
)
def test_message_state_follows_its_items(
    index: MediaIndex, outcomes: tuple[str, ...], expected: str
) -> None:
    rows = index.insert_message(message(30), media_rows(3), lease_owner="w", lease_seconds=60)
    assert rows is not None
    before = index.get_message(sid(30))
    for row, state in zip(rows, outcomes, strict=True):
        if state != "pending":
            assert index.finish_media(row.id, "w", state=state) is True
    got = index.get_message(sid(30))
    assert got is not None and before is not None
    assert got.state == expected
    assert [m.state for m in got.media] == list(outcomes)
    assert got.updated_at >= before.updated_at


def test_outcomes_finishing_together_share_transactions_and_all_land(index: MediaIndex) -> None:
    count = 24
    for n in range(count // 3):
        index.insert_message(message(40 + n), media_rows(3), lease_owner="w", lease_seconds=60)
    ids = [m.id for n in range(count // 3) for m in index.media_of(sid(40 + n))]
    commits = 0

    def count_commit(_conn: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(index.engine, "commit", count_commit)
    barrier = threading.Barrier(count)

    def finish(media_id: int) -> bool:
        barrier.wait()
        return index.finish_media(media_id, "w", state="stored", size_bytes=media_id)

    try:
        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(finish, ids))
    finally:
        event.remove(index.engine, "commit", count_commit)
    assert results == [True] * count
    assert 1 <= commits < count
    for n in range(count // 3):
        got = index.get_message(sid(40 + n))
        assert got is not None and got.state == "complete"
        assert [m.size_bytes for m in got.media] == [m.id for m in got.media]


def test_thumbnails_due_are_stored_images_without_one(index: MediaIndex) -> None:
    rows = index.insert_message(message(50), media_rows(3), lease_owner="w", lease_seconds=60)
    assert rows is not None
    image, audio, pending = rows
    index.finish_media(image.id, "w", state="stored", kind="image", storage_key="k/0.jpg")
    index.finish_media(audio.id, "w", state="stored", kind="audio", storage_key="k/1.mp3")
    assert index.missing_thumbnails(10, older_than=60) == []  # too recent: maybe in flight
    (due,) = index.missing_thumbnails(10, older_than=-1)
    assert (due.id, due.storage_key) == (image.id, "k/0.jpg")
    index.set_thumbnails([(image.id, "k/0.thumb.webp")])
    assert index.missing_thumbnails(10, older_than=-1) == []
    assert index.media_of(sid(50))[0].thumbnail_key == "k/0.thumb.webp"
    assert pending.state == "pending"


def test_remote_deletions_due_carry_the_account_and_leave_once_done(index: MediaIndex) -> None:
    rows = index.insert_message(message(51), media_rows(2), lease_owner="w", lease_seconds=60)
    assert rows is not None
    for row in rows:
        index.finish_media(row.id, "w", state="stored", remote_delete_state="pending")
    due = index.remote_deletions_due()
    assert sorted(item.id for item in due) == [row.id for row in rows]
    assert {item.account_sid for item in due} == {ACCOUNT}
    index.set_remote_delete(rows[0].id, "done")
    index.set_remote_delete(rows[1].id, "failed")
    (again,) = index.remote_deletions_due()
    assert again.id == rows[1].id
    done = index.get_media(rows[0].id)
    assert done is not None and done.remote_deleted_at is not None
