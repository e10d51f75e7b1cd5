"""receiver.index.messages on SQLite and PostgreSQL: record once, read, page, delete."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from receiver.index import MediaIndex
from tests.index.rows import ACCOUNT, media_rows, message, sid


def test_record_is_idempotent(index: MediaIndex) -> None:
    assert index.record_message(message(1), media_rows()) is True
    assert index.record_message(message(1, body="changed"), media_rows(5)) is False
    got = index.get_message(sid(1))
    assert got is not None
    assert got.body == "message 1"
    assert [m.idx for m in got.media] == [0, 1, 2]
    assert all(m.state == "pending" for m in got.media)
    assert got.state == "pending"


def test_fifty_concurrent_deliveries_store_one_message(index: MediaIndex) -> None:
    barrier = threading.Barrier(50)

    def deliver(_: int) -> bool:
        barrier.wait()
        return index.record_message(message(7), media_rows(3))

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(deliver, range(50)))
    assert results.count(True) == 1
    got = index.get_message(sid(7))
    assert got is not None and len(got.media) == 3


def test_message_without_media_is_complete(index: MediaIndex) -> None:
    index.record_message(message(2, num_media=0), [])
    got = index.get_message(sid(2))
    assert got is not None and got.state == "complete" and got.media == ()


def test_delete_message_removes_rows(index: MediaIndex) -> None:
    index.record_message(message(5), media_rows(2))
    assert index.delete_message(sid(5)) is True
    assert index.get_message(sid(5)) is None
    assert index.media_of(sid(5)) == []
    assert index.delete_message(sid(5)) is False


def test_insert_message_returns_its_leased_rows_in_index_order(index: MediaIndex) -> None:
    rows = index.insert_message(message(20), media_rows(4), lease_owner="me", lease_seconds=60)
    assert rows is not None
    assert [r.idx for r in rows] == [0, 1, 2, 3]
    assert {r.lease_owner for r in rows} == {"me"}
    stored = {m.id: m for m in index.media_of(sid(20))}
    assert [r.id for r in rows] == sorted(stored)
    assert all(r == stored[r.id] for r in rows)
    assert index.insert_message(message(20), media_rows(4)) is None
    assert index.insert_message(message(21, num_media=0), []) == []


def test_media_items_read_back_by_id_and_account(index: MediaIndex) -> None:
    rows = index.insert_message(message(8), media_rows(2))
    assert rows is not None
    assert index.get_media(rows[1].id) == rows[1]
    assert index.get_media(rows[1].id + 1000) is None
    assert index.account_of(sid(8)) == ACCOUNT
    assert index.account_of(sid(9)) is None


def test_counting_and_paging_follow_received_time(index: MediaIndex) -> None:
    for n in range(5):
        index.record_message(message(200 + n, num_media=n % 3), media_rows(n % 3))
    everything = [m.sid for m in index.messages_after(None, limit=50)]
    assert sorted(everything) == [sid(200 + n) for n in range(5)]
    assert index.count_messages() == 5
    # Keyset pages of two: every message once, in the same order as one page.
    paged: list[str] = []
    after = None
    while page := index.messages_after(after, limit=2):
        assert len(page) <= 2
        paged.extend(m.sid for m in page)
        after = (page[-1].received_at, page[-1].sid)
    assert paged == everything
    third = index.get_message(everything[2])
    assert third is not None
    until = index.messages_after(None, until=third.received_at, limit=50)
    since = index.messages_after(None, since=third.received_at, limit=50)
    assert [m.sid for m in until] + [m.sid for m in since] == everything
    assert index.count_messages(until=third.received_at) == len(until)
    assert index.count_messages(since=third.received_at) == len(since)
    # Pages carry each message's media items in index order.
    assert [[item.idx for item in m.media] for m in since] == [
        list(range(m.num_media)) for m in since
    ]
