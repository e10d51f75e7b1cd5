"""receiver.index.events on SQLite and PostgreSQL: the outbox is written with its change."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from receiver.index import MediaIndex
from receiver.index.event_queue import Outcome
from receiver.index.events import events_column
from receiver.index.outbound import OutboundIndex
from receiver.index.schema import event_attempts, event_deliveries, events, utcnow
from receiver.twilio.webhook import StatusCallback
from tests.index.rows import media_rows, message, sid


def _types(index: MediaIndex, message_sid: str | None = None) -> list[str]:
    stmt = select(events.c.type).order_by(events.c.id)
    if message_sid is not None:
        stmt = stmt.where(events.c.message_sid == message_sid)
    with index.engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


def _count(index: MediaIndex, table: object) -> int:
    with index.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_a_message_without_media_is_received_and_completed_at_once(index: MediaIndex) -> None:
    assert index.record_message(message(1, num_media=0), []) is True
    assert _types(index, sid(1)) == ["message.received", "message.completed"]
    # No endpoint: the log is kept, nothing is due, the dispatcher is not woken.
    assert _count(index, event_deliveries) == 0
    assert not index.events_due.is_set()
    # The same MessageSid again writes nothing.
    assert index.record_message(message(1, num_media=0), []) is False
    assert len(_types(index)) == 2


def test_media_outcomes_and_completion_are_events(index: MediaIndex) -> None:
    endpoint = index.add_endpoint("https://hooks.example.com/a", secret="whsec_x")
    items = index.insert_message(message(2), media_rows(3), lease_owner="w", lease_seconds=60)
    assert items is not None
    assert index.events_due.is_set()
    index.finish_media(items[0].id, "w", state="stored", storage_key="k/0", kind="image")
    index.finish_media(items[1].id, "w", state="rejected", reason="unsupported_type")
    # A failure with a retry ahead is not final: no event yet.
    retry_at = utcnow() + timedelta(seconds=30)
    index.finish_media(
        items[2].id, "w", state="failed", reason="fetch_failed", next_attempt_at=retry_at
    )
    assert _types(index, sid(2)) == ["message.received", "media.stored", "media.rejected"]
    (again,) = index.claim_media(
        "w", lease_seconds=60, limit=5, max_attempts=5, now=retry_at + timedelta(seconds=1)
    )
    index.finish_media(
        again.id, "w", state="failed", reason="fetch_failed", attempts=5, next_attempt_at=None
    )
    assert _types(index, sid(2))[-2:] == ["media.failed", "message.completed"]
    completed = index.list_events(type="message.completed")[0]
    assert completed.data["sid"] == sid(2)
    assert completed.data["state"] == "incomplete"
    assert [m["state"] for m in completed.data["media"]] == ["stored", "rejected", "failed"]
    stored = index.list_events(type="media.stored")[0]
    assert stored.data["message_sid"] == sid(2) and stored.data["storage_key"] == "k/0"
    # One delivery per event for the one endpoint subscribed to everything.
    assert _count(index, event_deliveries) == 5
    assert {d["endpoint_id"] for e in index.list_events() for d in e.deliveries} == {endpoint.id}


def test_subscriptions_choose_the_endpoints(index: MediaIndex) -> None:
    every = index.add_endpoint("https://a.example.com/", secret="whsec_a")
    stored_only = index.add_endpoint(
        "https://b.example.com/", types=["media.stored"], secret="whsec_b"
    )
    off = index.add_endpoint("https://c.example.com/", secret="whsec_c")
    index.disable_endpoint(off.id, "test")
    items = index.insert_message(message(3), media_rows(1), lease_owner="w", lease_seconds=60)
    assert items is not None
    index.finish_media(items[0].id, "w", state="stored", storage_key="k")
    by_event = {e.type: {d["endpoint_id"] for d in e.deliveries} for e in index.list_events()}
    assert by_event == {
        "message.received": {every.id},
        "media.stored": {every.id, stored_only.id},
        "message.completed": {every.id},
    }
    with pytest.raises(ValueError, match="unknown event type"):
        events_column(["message.sent"])


def test_opt_outs_and_status_moves_are_events(index: MediaIndex) -> None:
    index.add_endpoint("https://a.example.com/", secret="whsec_a")
    index.record_keyword("+15550001111", "+15550002222", "STOP", sid(4))
    (optout,) = index.list_events(type="optout.changed")
    assert optout.data["opted_out"] is True and optout.data["address"] == "+15550001111"
    box = OutboundIndex(index.engine, begin=index.begin, notify_events=index.notify_events)
    row, _ = box.reserve({"to_addr": "+15550003333", "idempotency_key": "k1"})
    box.claim(row.id)
    box.mark_submitted(row.id, {"sid": "SM" + "5" * 32, "status": "queued"})
    callback = StatusCallback(
        message_sid="SM" + "5" * 32,
        account_sid="AC" + "a" * 32,
        status="delivered",
        error_code=None,
        raw_dlr_done_date=None,
        to=None,
        from_=None,
        params=(),
    )
    box.record_status(callback)
    box.record_status(callback)  # a repeat moves nothing
    status = index.list_events(type="message.status")
    assert [e.data["status"] for e in status] == ["delivered"]


def test_claims_leases_and_outcomes(index: MediaIndex) -> None:
    endpoint = index.add_endpoint("https://a.example.com/", secret="whsec_a")
    for n in range(10, 16):
        index.record_message(message(n, num_media=0), [])
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(3)

    def claim(owner: str) -> None:
        barrier.wait()
        got: list[int] = []
        while rows := index.claim_deliveries(owner, lease_seconds=60, limit=2):
            got.extend(r.delivery_id for r in rows)
        claimed[owner] = got

    threads = [threading.Thread(target=claim, args=(f"d{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [d for got in claimed.values() for d in got]
    assert len(every) == 12 and len(set(every)) == 12
    # Leased: nothing more is due until the lease ends; then another owner takes over.
    assert index.claim_deliveries("x", lease_seconds=60) == []
    later = utcnow() + timedelta(seconds=61)
    taken = index.claim_deliveries("x", lease_seconds=60, limit=100, now=later)
    assert len(taken) == 12 and {c.attempt for c in taken} == {2}
    first, second, third = taken[:3]
    # The previous holder lost its lease: its outcome is not recorded.
    stale = Outcome(first.delivery_id, first.event.id, endpoint.id, 1, ok=True, status=200)
    assert index.record_outcomes("d0", [stale]) + index.record_outcomes("d1", [stale]) == 0
    outcomes = [
        Outcome(first.delivery_id, first.event.id, endpoint.id, 2, ok=True, status=204),
        Outcome(
            second.delivery_id,
            second.event.id,
            endpoint.id,
            2,
            ok=False,
            status=500,
            response="x" * 5000,
            next_attempt_at=utcnow() + timedelta(seconds=5),
        ),
        Outcome(third.delivery_id, third.event.id, endpoint.id, 2, ok=False, error="reset"),
    ]
    assert index.record_outcomes("x", outcomes) == 3
    one = index.get_event(second.event.id)
    assert one is not None
    (attempt,) = one.attempts
    assert attempt["status"] == 500 and len(attempt["response"]) == 1024
    assert [e.id for e in index.list_events(state="failed")] == [third.event.id]
    got = index.get_endpoint(endpoint.id)
    assert got is not None and got.last_success_at is not None


def test_gone_disables_the_endpoint_and_replay_brings_it_back(index: MediaIndex) -> None:
    endpoint = index.add_endpoint("https://a.example.com/", secret="whsec_a")
    index.record_message(message(20, num_media=0), [])
    first, second = index.claim_deliveries("x", lease_seconds=60)
    gone = Outcome(
        first.delivery_id, first.event.id, endpoint.id, 1, ok=False, status=410, disable="410 Gone"
    )
    index.record_outcomes("x", [gone])
    got = index.get_endpoint(endpoint.id)
    assert got is not None and not got.enabled and got.disabled_reason == "410 Gone"
    states = {d["state"] for e in index.list_events() for d in e.deliveries}
    assert states == {"failed", "abandoned"}
    assert index.claim_deliveries("y", lease_seconds=60) == []
    assert index.replay(endpoint.id, since=utcnow() - timedelta(hours=1)) == 2
    again = index.get_endpoint(endpoint.id)
    assert again is not None and again.enabled
    assert len(index.claim_deliveries("y", lease_seconds=60)) == 2
    with pytest.raises(ValueError):
        index.replay(endpoint.id)


def test_rotation_keeps_both_secrets_for_the_overlap(index: MediaIndex) -> None:
    endpoint = index.add_endpoint("https://a.example.com/", secret="whsec_old")
    assert index.rotate_secret(endpoint.id, "whsec_new", overlap=timedelta(hours=24))
    got = index.get_endpoint(endpoint.id)
    assert got is not None
    assert got.secrets_at(utcnow()) == ("whsec_new", "whsec_old")
    assert got.secrets_at(utcnow() + timedelta(hours=25)) == ("whsec_new",)


def test_test_events_reach_only_the_tested_endpoint(index: MediaIndex) -> None:
    a = index.add_endpoint("https://a.example.com/", types=["media.stored"], secret="whsec_a")
    index.add_endpoint("https://b.example.com/", secret="whsec_b")
    event_id = index.test_endpoint(a.id, {"endpoint_id": a.id})
    assert event_id is not None and event_id.startswith("evt_")
    (claimed,) = index.claim_deliveries("x", lease_seconds=60)
    assert claimed.endpoint.id == a.id and claimed.event.type == "endpoint.test"
    assert index.test_endpoint("ep_missing", {}) is None


def test_removing_an_endpoint_drops_what_it_was_due(index: MediaIndex) -> None:
    endpoint = index.add_endpoint("https://a.example.com/", secret="whsec_a")
    index.record_message(message(30, num_media=0), [])
    assert index.remove_endpoint(endpoint.id) is True
    assert index.claim_deliveries("x", lease_seconds=60) == []
    assert _count(index, event_deliveries) == 0
    assert len(_types(index)) == 2  # the log stays


def test_erasing_a_message_erases_its_events(index: MediaIndex) -> None:
    endpoint = index.add_endpoint("https://a.example.com/", secret="whsec_a")
    index.record_message(message(40, num_media=0), [])
    index.record_message(message(41, num_media=0), [])
    claimed = index.claim_deliveries("x", lease_seconds=60)
    index.record_outcomes(
        "x",
        [Outcome(c.delivery_id, c.event.id, endpoint.id, 1, ok=True, status=200) for c in claimed],
    )
    assert _count(index, event_attempts) == 4
    assert index.delete_message(sid(40)) is True
    assert _types(index, sid(40)) == []
    assert _types(index, sid(41)) == ["message.received", "message.completed"]
    assert _count(index, event_deliveries) == 2 and _count(index, event_attempts) == 2


def test_figures_for_metrics_and_check(index: MediaIndex) -> None:
    endpoint = index.add_endpoint("https://a.example.com/", secret="whsec_a")
    index.record_message(message(50, num_media=0), [])
    figures = index.event_figures()
    assert figures.events_by_type == {"message.received": 1, "message.completed": 1}
    assert figures.backlog_by_endpoint == {endpoint.id: 2}
    assert figures.oldest_undelivered is not None
    assert figures.oldest_undelivered <= utcnow()
    index.disable_endpoint(endpoint.id, "no success for 5 days")
    figures = index.event_figures()
    assert [e.id for e in figures.disabled] == [endpoint.id]
    assert figures.deliveries_by_state == {"abandoned": 2}


def test_an_event_is_never_committed_without_its_change(index: MediaIndex) -> None:
    index.add_endpoint("https://a.example.com/", secret="whsec_a")
    # A message row that the database refuses (NOT NULL) leaves no event behind.
    with pytest.raises(IntegrityError):
        index.record_message(message(60, from_addr=None, num_media=0), [])
    assert _types(index) == []


def test_items_finishing_at_once_in_two_processes_complete_each_message_once(
    db_url: str,
) -> None:
    # Two indexes, as two processes have, each finishing one item of every message
    # at the same moment: exactly one writes `message.completed`, and the message's
    # state ends `complete` (on PostgreSQL the two transactions really overlap).
    first, second = MediaIndex.open(db_url), MediaIndex.open(db_url)
    try:
        pairs = []
        for n in range(40):
            items = first.insert_message(
                message(500 + n), media_rows(2), lease_owner="w", lease_seconds=60
            )
            assert items is not None
            pairs.append(items)
        together = threading.Barrier(2)
        errors: list[BaseException] = []

        def finish(ix: MediaIndex, k: int) -> None:
            try:
                for items in pairs:
                    together.wait(10)
                    ix.finish_media(
                        items[k].id, "w", state="stored", storage_key=f"k/{items[k].id}"
                    )
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)
                together.abort()

        threads = [
            threading.Thread(target=finish, args=(ix, k)) for k, ix in enumerate((first, second))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        for items in pairs:
            message_sid = items[0].message_sid
            assert _types(first, message_sid).count("message.completed") == 1
            record = first.get_message(message_sid)
            assert record is not None and record.state == "complete"
    finally:
        first.close()
        second.close()


def test_delivery_bookkeeping_skips_the_flush_and_leaves_other_writes_durable(
    index: MediaIndex,
) -> None:
    if index.dialect == "sqlite":
        setting, unflushed, durable = "PRAGMA synchronous", 1, 2  # NORMAL, FULL
    else:
        setting, unflushed, durable = "SHOW synchronous_commit", "off", "on"
    with index.begin_unflushed() as conn:
        assert conn.exec_driver_sql(setting).scalar() == unflushed
    # Every pooled connection is back to flushing its commits.
    for _ in range(3):
        with index.begin() as conn:
            assert conn.exec_driver_sql(setting).scalar() == durable
    index.add_endpoint("https://hooks.example.com/a", secret="whsec_x")
    index.record_message(message(700, num_media=0), [])
    assert len(index.claim_deliveries("w", lease_seconds=30)) == 2
    with index.engine.connect() as conn:
        assert conn.exec_driver_sql(setting).scalar() == durable
