"""Outbound rows and status events on SQLite and PostgreSQL: idempotency, monotonic status, stats."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.index import MediaIndex
from receiver.index.outbound import OutboundIndex, OutboundRecord, can_advance
from receiver.twilio.webhook import parse_status

SID = "SM" + "a" * 32


def event(status: str, sid: str = SID, **extra: str) -> Any:
    params = [("MessageSid", sid), ("MessageStatus", status), ("AccountSid", "AC" + "1" * 32)]
    return parse_status(params + list(extra.items()))


@pytest.fixture
def box(db_url: str) -> Any:
    index = MediaIndex.open(db_url)
    yield OutboundIndex(index.engine, begin=index.begin)
    index.close()


def submitted(box: OutboundIndex, sid: str = SID, key: str | None = None) -> int:
    row, _ = box.reserve(
        {
            "idempotency_key": key,
            "to_addr": "+15558675310",
            "from_addr": "+15017122661",
            "body": "hi",
        }
    )
    assert box.claim(row.id)
    box.mark_submitted(row.id, {"sid": sid, "status": "queued"})
    return row.id


def status_of(box: OutboundIndex, sid: str) -> str | None:
    row = box.by_sid(sid)
    return row.status if row is not None else None


def test_reserve_is_idempotent_on_the_key(box: OutboundIndex) -> None:
    first, created = box.reserve({"idempotency_key": "k1", "to_addr": "+1555", "body": "a"})
    again, created_again = box.reserve({"idempotency_key": "k1", "to_addr": "+1555", "body": "a"})
    assert created and not created_again and first.id == again.id
    assert box.claim(first.id) is True
    assert box.claim(first.id) is False  # a second sender loses the claim


def test_reclaim_takes_a_submitting_row_once(box: OutboundIndex) -> None:
    row, _ = box.reserve({"idempotency_key": "k2", "to_addr": "CH" + "0" * 32, "body": "a"})
    assert box.reclaim(row.id, row.updated_at) is False  # pending, not submitting
    assert box.claim(row.id)
    seen = box.get(row.id)
    assert seen is not None
    assert box.reclaim(row.id, seen.updated_at) is True
    # A second taker that saw the same state loses; one that looks again may take it.
    assert box.reclaim(row.id, seen.updated_at) is False
    fresh = box.get(row.id)
    assert fresh is not None and fresh.updated_at > seen.updated_at
    assert box.reclaim(row.id, fresh.updated_at) is True


def test_callbacks_out_of_order_end_at_the_final_status(box: OutboundIndex) -> None:
    submitted(box)
    for status in ("sending", "delivered", "queued", "sent"):
        box.record_status(
            event(status, RawDlrDoneDate="2611220232") if status == "delivered" else event(status)
        )
    row = box.by_sid(SID)
    assert row is not None and row.status == "delivered"
    assert row.raw_dlr_done_date == "2611220232"
    assert [e["status"] for e in box.events(SID)] == ["sending", "delivered", "queued", "sent"]


def test_error_code_is_kept_and_a_final_state_never_regresses(box: OutboundIndex) -> None:
    submitted(box)
    box.record_status(event("undelivered", ErrorCode="30003"))
    box.record_status(event("sent"))
    box.record_status(event("delivered"))
    row = box.by_sid(SID)
    assert row is not None and (row.status, row.error_code) == ("undelivered", 30003)


def test_read_follows_delivered(box: OutboundIndex) -> None:
    submitted(box)
    for status in ("read", "delivered", "sent"):
        box.record_status(event(status))
    assert status_of(box, SID) == "read"


def test_callbacks_before_the_create_answer_are_applied(box: OutboundIndex) -> None:
    assert box.record_status(event("sent")) is None  # unknown sid: stored only
    box.record_status(event("delivered"))
    submitted(box)
    assert status_of(box, SID) == "delivered"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations(["queued", "sending", "sent", "delivered"]))
def test_any_order_ends_delivered(box: OutboundIndex, order: list[str]) -> None:
    sid = "SM" + format(abs(hash(tuple(order))), "032x")[:32]
    submitted(box, sid)
    for status in order:
        box.record_status(event(status, sid))
    assert status_of(box, sid) == "delivered"


def test_transition_table() -> None:
    ladder = ["queued", "sending", "sent", "delivered"]
    for a, b in itertools.combinations(ladder, 2):
        assert can_advance(a, b) and not can_advance(b, a)
    for final in ("delivered", "undelivered", "failed"):
        assert not any(
            can_advance(final, s)
            for s in ("queued", "sending", "sent", "failed", "undelivered")
            if s != final
        )
    assert can_advance("delivered", "read") and not can_advance("failed", "read")
    assert not can_advance("sent", "receiving")  # inbound statuses are not ours


def test_stats_count_current_status_error_code_and_day(box: OutboundIndex) -> None:
    for i, final in enumerate(["delivered", "delivered", "undelivered", "sent"]):
        sid = f"SM{i:032d}"
        submitted(box, sid)
        box.record_status(event("sent", sid))
        if final != "sent":
            extra = {"ErrorCode": "30007"} if final == "undelivered" else {}
            box.record_status(event(final, sid, **extra))
    refused, _ = box.reserve({"to_addr": "+1555", "body": "x"})
    box.finish(refused.id, "refused", error_message="opted out")
    stats = box.stats()
    assert stats["by_status"] == {"delivered": 2, "refused": 1, "sent": 1, "undelivered": 1}
    assert box.count_by_status() == stats["by_status"]
    assert stats["by_error_code"] == {"30007": 1}
    assert stats["total"] == 5
    (day,) = stats["by_day"].values()
    assert day["total"] == 5 and day["delivered"] == 2


def test_rows_come_back_as_records_with_their_media(box: OutboundIndex) -> None:
    media = [{"source": "https://example.com/a.jpg"}]
    row, _ = box.reserve({"to_addr": "+15558675310", "body": "hi", "media": media})
    assert isinstance(row, OutboundRecord)
    assert (row.status, row.body, row.media, row.sid) == ("pending", "hi", tuple(media), None)
    box.update_prepared(row.id, body="hi there", media=[{"url": "u"}], fallback="link")
    (again,) = box.recent(1)
    assert (again.body, again.media, again.fallback) == ("hi there", ({"url": "u"},), "link")
    data = again.as_dict()
    assert data["media"] == [{"url": "u"}] and data["to_addr"] == "+15558675310"


def test_outbound_writes_queue_on_the_sqlite_writer_lock(tmp_path: Any) -> None:
    import threading

    index = MediaIndex.open(f"sqlite:///{tmp_path / 'index.db'}")
    box = OutboundIndex(index.engine, begin=index.begin)
    holding, release = threading.Event(), threading.Event()
    done: list[bool] = []

    def hold_the_lock() -> None:
        with index.begin():
            holding.set()
            release.wait(10)

    def reserve() -> None:
        _, created = box.reserve({"idempotency_key": "q", "to_addr": "+1555", "body": "a"})
        done.append(created)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert holding.wait(5)
    writer = threading.Thread(target=reserve)
    writer.start()
    writer.join(0.3)
    assert done == [], "the outbound write went ahead while another writer held the lock"
    release.set()
    holder.join(5)
    writer.join(5)
    assert done == [True]
    index.close()
