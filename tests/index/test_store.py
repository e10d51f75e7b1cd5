"""The index on SQLite and the local PostgreSQL: idempotent ingest, atomic claims, opt-outs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import event, update
from sqlalchemy.engine import Connection

from receiver.index import MediaIndex
from receiver.index.groupcommit import GroupCommit
from receiver.index.schema import media, utcnow

ACCOUNT = "AC" + "a" * 32


def sid(n: int) -> str:
    return f"MM{n:032d}"


def message(n: int, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "sid": sid(n),
        "account_sid": ACCOUNT,
        "from_addr": "+15550001111",
        "from_channel": "sms",
        "to_addr": "+15550002222",
        "to_channel": "sms",
        "body": f"message {n}",
        "num_media": 3,
        "params": json.dumps([["MessageSid", sid(n)]]),
    }
    row.update(extra)
    return row


def media_rows(count: int = 3) -> list[dict[str, object]]:
    return [
        {"idx": i, "url": f"https://api.twilio.com/m/{i}", "declared_type": "image/jpeg"}
        for i in range(count)
    ]


@pytest.fixture
def index(db_url: str):
    ix = MediaIndex.open(db_url)
    yield ix
    ix.close()


def test_record_is_idempotent(index: MediaIndex) -> None:
    assert index.record_message(message(1), media_rows()) is True
    assert index.record_message(message(1, body="changed"), media_rows(5)) is False
    got = index.get_message(sid(1))
    assert got is not None
    assert got["body"] == "message 1"
    assert [m["idx"] for m in got["media"]] == [0, 1, 2]
    assert all(m["state"] == "pending" for m in got["media"])
    assert got["state"] == "pending"


def test_fifty_concurrent_deliveries_store_one_message(index: MediaIndex) -> None:
    barrier = threading.Barrier(50)

    def deliver(_: int) -> bool:
        barrier.wait()
        return index.record_message(message(7), media_rows(3))

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(deliver, range(50)))
    assert results.count(True) == 1
    got = index.get_message(sid(7))
    assert got is not None and len(got["media"]) == 3


def test_message_without_media_is_complete(index: MediaIndex) -> None:
    index.record_message(message(2, num_media=0), [])
    got = index.get_message(sid(2))
    assert got is not None and got["state"] == "complete" and got["media"] == []


def test_claims_never_overlap(index: MediaIndex) -> None:
    for n in range(10):
        index.record_message(message(100 + n), media_rows(3))
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def claim(owner: str) -> None:
        barrier.wait()
        got: list[int] = []
        while rows := index.claim_media(owner, lease_seconds=60, limit=3, max_attempts=5):
            got.extend(r["id"] for r in rows)
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
    assert again["id"] == row["id"] and again["attempts"] == 2
    assert index.finish_media(row["id"], "a", state="stored") is False
    assert index.finish_media(row["id"], "b", state="stored", sha256="0" * 64) is True
    got = index.get_message(sid(3))
    assert got is not None and got["state"] == "complete"
    assert got["media"][0]["lease_owner"] is None


def test_failed_items_wait_for_their_retry_time_and_respect_attempts(index: MediaIndex) -> None:
    index.record_message(message(4), media_rows(1))
    (row,) = index.claim_media("a", lease_seconds=60, limit=1, max_attempts=2)
    retry_at = utcnow() + timedelta(seconds=30)
    index.finish_media(
        row["id"], "a", state="failed", reason="fetch_failed", next_attempt_at=retry_at
    )
    assert index.get_message(sid(4))["state"] == "incomplete"
    assert index.claim_media("a", lease_seconds=60, limit=1, max_attempts=2) == []
    (second,) = index.claim_media(
        "a", lease_seconds=60, limit=1, max_attempts=2, now=retry_at + timedelta(seconds=1)
    )
    index.finish_media(second["id"], "a", state="failed", reason="fetch_failed")
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


def test_opt_outs_follow_the_latest_keyword(index: MediaIndex) -> None:
    assert index.is_opted_out("+15550001111", ["+15550002222"]) is False
    index.set_opt_out(
        "+15550001111", "+15550002222", opted_out=True, keyword="STOP", source="inbound"
    )
    assert index.is_opted_out("+15550001111", ["+15550002222"]) is True
    assert index.is_opted_out("+15550001111", ["+15559999999"]) is False
    index.set_opt_out(
        "+15550001111", "+15550002222", opted_out=False, keyword="START", source="inbound"
    )
    assert index.is_opted_out("+15550001111", ["+15550002222"]) is False
    index.set_opt_out("+15550001111", "*", opted_out=True, keyword="21610", source="twilio-21610")
    assert index.is_opted_out("+15550001111", ["+15559999999"]) is True


def test_delete_message_removes_rows(index: MediaIndex) -> None:
    index.record_message(message(5), media_rows(2))
    assert index.delete_message(sid(5)) is True
    assert index.get_message(sid(5)) is None
    assert index.media_of(sid(5)) == []
    assert index.delete_message(sid(5)) is False


def test_schema_upgrade_is_repeatable(db_url: str) -> None:
    MediaIndex.open(db_url).close()
    again = MediaIndex.open(db_url)
    again.ping()
    again.close()


def test_a_version_1_sqlite_index_is_upgraded_in_place(tmp_path: object) -> None:
    import sqlite3
    from pathlib import Path

    from receiver.index.schema import SCHEMA_VERSION

    assert isinstance(tmp_path, Path)
    url = f"sqlite:///{tmp_path / 'index.db'}"
    first = MediaIndex.open(url)
    first.record_message(message(7, body="kept across the upgrade"), media_rows(1))
    first.close()
    # Make it look like a database written by schema version 1.
    conn = sqlite3.connect(tmp_path / "index.db")
    conn.executescript(
        "DROP INDEX ix_messages_received_body; DROP INDEX ix_media_state_message;"
        "DROP TRIGGER messages_fts_insert; DROP TRIGGER messages_fts_delete;"
        "DROP TRIGGER messages_fts_update; DROP TABLE messages_fts;"
        "UPDATE receiver_meta SET value = '1' WHERE key = 'schema_version';"
    )
    conn.commit()
    upgraded = MediaIndex.open(url)
    upgraded.close()
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    version = conn.execute(
        "SELECT value FROM receiver_meta WHERE key = 'schema_version'"
    ).fetchone()[0]
    found = conn.execute(
        "SELECT rowid FROM messages_fts WHERE messages_fts MATCH '\"across\"'"
    ).fetchall()
    conn.close()
    assert int(version) == SCHEMA_VERSION == 2
    wanted = {"ix_messages_received_body", "ix_media_state_message", "messages_fts"}
    assert wanted | {"messages_fts_insert"} <= names
    # The search table was filled from the rows already there.
    assert len(found) == 1


def test_writer_lock_queues_writers_of_other_processes(tmp_path: object) -> None:
    import multiprocessing
    import time
    from pathlib import Path

    from receiver.index.writelock import WriterLock

    assert isinstance(tmp_path, Path)
    lock = WriterLock(str(tmp_path / "index.db"))
    ctx = multiprocessing.get_context("fork")
    took = ctx.Queue()

    def child() -> None:
        started = time.monotonic()
        with lock.hold():  # the same object, inherited: it must open its own file
            took.put(time.monotonic() - started)

    with lock.hold():
        proc = ctx.Process(target=child)
        proc.start()
        time.sleep(0.5)
        assert took.empty()  # still waiting for the parent's write to finish
    assert took.get(timeout=10) >= 0.4
    proc.join(10)
    assert proc.exitcode == 0
    assert (tmp_path / "index.db-writer.lock").exists()
    lock.close()


def test_insert_message_returns_its_leased_rows_in_index_order(index: MediaIndex) -> None:
    rows = index.insert_message(message(20), media_rows(4), lease_owner="me", lease_seconds=60)
    assert rows is not None
    assert [r["idx"] for r in rows] == [0, 1, 2, 3]
    assert {r["lease_owner"] for r in rows} == {"me"}
    stored = {m["id"]: m for m in index.media_of(sid(20))}
    assert [r["id"] for r in rows] == sorted(stored)
    assert all(r == stored[r["id"]] for r in rows)
    assert index.insert_message(message(20), media_rows(4)) is None
    assert index.insert_message(message(21, num_media=0), []) == []


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
            assert index.finish_media(row["id"], "w", state=state) is True
    got = index.get_message(sid(30))
    assert got is not None and before is not None
    assert got["state"] == expected
    assert [m["state"] for m in got["media"]] == list(outcomes)
    assert got["updated_at"] >= before["updated_at"]


def test_outcomes_finishing_together_share_transactions_and_all_land(index: MediaIndex) -> None:
    count = 24
    for n in range(count // 3):
        index.insert_message(message(40 + n), media_rows(3), lease_owner="w", lease_seconds=60)
    ids = [m["id"] for n in range(count // 3) for m in index.media_of(sid(40 + n))]
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
        assert got is not None and got["state"] == "complete"
        assert [m["size_bytes"] for m in got["media"]] == [m["id"] for m in got["media"]]


def test_a_write_failing_in_a_shared_transaction_fails_alone(index: MediaIndex) -> None:
    group = GroupCommit(index.begin)
    rows = index.insert_message(message(60), media_rows(3), lease_owner="w", lease_seconds=60)
    assert rows is not None
    hold = threading.Event()
    started = threading.Event()

    def slow_first(conn: Connection) -> str:
        started.set()
        hold.wait(5)
        return "first"

    def fail(conn: Connection) -> str:
        raise ValueError("this write is broken")

    results: dict[str, object] = {}

    def run(name: str, work: Callable[[Connection], object]) -> None:
        try:
            results[name] = group.run(work)
        except ValueError as exc:
            results[name] = exc

    first = threading.Thread(target=run, args=("first", slow_first))
    first.start()
    assert started.wait(5)

    # While the first transaction is open, two more writes queue: they are
    # committed together, and the broken one must not take the other down.
    def mark(conn: Connection) -> int:
        return conn.execute(
            update(media).where(media.c.id == rows[0]["id"]).values(size_bytes=7)
        ).rowcount

    others = [
        threading.Thread(target=run, args=("broken", fail)),
        threading.Thread(target=run, args=("mark", mark)),
    ]
    for t in others:
        t.start()
    waited = 0
    while len(group._queue) < 2 and waited < 500:
        time.sleep(0.01)
        waited += 1
    hold.set()
    for t in [first, *others]:
        t.join(10)
    assert results["first"] == "first"
    assert isinstance(results["broken"], ValueError)
    assert results["mark"] == 1
    assert index.media_of(sid(60))[0]["size_bytes"] == 7
