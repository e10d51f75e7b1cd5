"""receiver.index.groupcommit: writes queued together share a transaction, and fail alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.engine import Connection

from receiver.index import MediaIndex
from receiver.index.groupcommit import GroupCommit
from receiver.index.schema import media
from tests.index.rows import media_rows, message, sid


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
            update(media).where(media.c.id == rows[0].id).values(size_bytes=7)
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
    assert index.media_of(sid(60))[0].size_bytes == 7


def test_a_deadlock_victim_is_run_again(pg_url: str) -> None:
    # Two processes' writes lock two rows in opposite orders; PostgreSQL aborts one
    # as the deadlock victim, which then runs again and succeeds.
    first, second = MediaIndex.open(pg_url), MediaIndex.open(pg_url)
    try:
        rows = first.insert_message(message(70), media_rows(2), lease_owner="w", lease_seconds=60)
        assert rows is not None
        a, b = rows[0].id, rows[1].id
        both_hold_one = threading.Barrier(2)
        runs = {"forward": 0, "backward": 0}

        def locking(name: str, order: tuple[int, int]) -> Callable[[Connection], str]:
            def work(conn: Connection) -> str:
                runs[name] += 1
                conn.execute(update(media).where(media.c.id == order[0]).values(detail=name))
                if runs[name] == 1:
                    both_hold_one.wait(10)
                conn.execute(update(media).where(media.c.id == order[1]).values(detail=name))
                return name

            return work

        results: dict[str, object] = {}

        def run(index: MediaIndex, name: str, order: tuple[int, int]) -> None:
            try:
                results[name] = GroupCommit(index.begin).run(locking(name, order))
            except Exception as exc:  # reported below, in the test's thread
                results[name] = exc

        threads = [
            threading.Thread(target=run, args=(first, "forward", (a, b))),
            threading.Thread(target=run, args=(second, "backward", (b, a))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == {"forward": "forward", "backward": "backward"}
        assert sorted(runs.values()) == [1, 2]  # exactly one was the victim, run twice
    finally:
        first.close()
        second.close()
