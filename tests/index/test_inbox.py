"""receiver.index.inbox on SQLite and PostgreSQL: threads from inbound and outbound rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from receiver.index import MediaIndex
from receiver.index.inbox import (
    ThreadKey,
    decode_cursor,
    encode_cursor,
    list_threads,
    thread_entries,
    thread_opted_out,
)
from receiver.index.schema import outbound_messages
from tests.index.rows import message

OURS = "+15017122661"
SERVICE = "MG" + "1" * 32
START = datetime(2024, 5, 1, 9, tzinfo=UTC)


def inbound(index: MediaIndex, n: int, customer: str, minute: int, **extra: object) -> None:
    index.record_message(
        message(
            n,
            **{
                "from_addr": customer,
                "to_addr": OURS,
                "body": f"in {n}",
                "num_media": 0,
                "received_at": START + timedelta(minutes=minute),
                **extra,
            },
        ),
        [],
    )


def outbound(index: MediaIndex, customer: str, minute: int, status: str = "delivered") -> None:
    at = START + timedelta(minutes=minute)
    with index.engine.begin() as conn:
        conn.execute(
            insert(outbound_messages).values(
                sid=f"SM{minute:032d}",
                to_addr=customer,
                from_addr=OURS,
                body=f"out {minute}",
                media="[]",
                status=status,
                created_at=at,
                updated_at=at,
            )
        )


def test_threads_are_newest_activity_first_and_pages_cover_them_once(index: MediaIndex) -> None:
    # Customer c<k> last spoke at minute 10*k; c3's reply (an outbound) is newest of all.
    for k in range(1, 8):
        inbound(index, k, f"+1555000000{k}", 10 * k)
    outbound(index, "+15550000003", 200, status="sent")
    inbound(index, 50, "+15550000001", 5, messaging_service_sid=SERVICE)
    seen: list[str] = []
    cursor = None
    while True:
        page = list_threads(index, cursor=cursor, limit=3)
        assert len(page.rows) <= 3
        seen += [t.key.encode() for t in page.rows]
        if page.next_cursor is None:
            break
        cursor = decode_cursor(encode_cursor(page.next_cursor))
    expected_order = [3, 7, 6, 5, 4, 2, 1]
    assert seen == [f"{OURS}~+1555000000{k}" for k in expected_order] + [f"{SERVICE}~+15550000001"]
    first = list_threads(index, limit=1).rows[0]
    assert first.inbound == 1 and first.outbound == 1
    assert isinstance(first.last, dict) and first.last["status"] == "sent"


def test_a_thread_shows_both_directions_in_order_and_its_opt_out(index: MediaIndex) -> None:
    customer = "+15550000009"
    inbound(index, 1, customer, 1)
    outbound(index, customer, 2)
    inbound(index, 2, customer, 3, body="STOP", keyword="STOP")
    inbound(index, 3, "+15550000010", 4)  # another thread
    index.record_keyword(customer, OURS, "STOP", "MM" + "0" * 32)
    key = ThreadKey(OURS, customer)
    entries = thread_entries(index, key)
    assert [("in" if e.inbound else "out") for e in entries] == ["in", "out", "in"]
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    assert thread_opted_out(index, key)
    assert not thread_opted_out(index, ThreadKey(OURS, "+15550000010"))
    assert thread_entries(index, ThreadKey(OURS, "+19999999999")) == []


def test_thread_keys_round_trip_and_refuse_garbage() -> None:
    key = ThreadKey(SERVICE, "whatsapp:+15550001111")
    assert ThreadKey.decode(key.encode()) == key
    for raw in ("", "~", "a~", "~b", "a~b~c", "CH" + "1" * 32, "x" * 600 + "~y"):
        assert ThreadKey.decode(raw) is None
