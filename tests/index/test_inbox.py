"""receiver.index.inbox on SQLite and PostgreSQL: threads from inbound and outbound rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select

from receiver.index import MediaIndex
from receiver.index.db import upgrade
from receiver.index.inbox import (
    ThreadKey,
    decode_cursor,
    encode_cursor,
    list_threads,
    thread_entries,
    thread_opted_out,
)
from receiver.index.outbound import OutboundIndex
from receiver.index.schema import messages, meta, thread_summary
from receiver.index.threads import BACKFILLED, rebuild
from tests.index.rows import message, sid

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
    """An outbound message through the send path's writes: reserved, then accepted."""
    at = START + timedelta(minutes=minute)
    sends = OutboundIndex(index.engine, begin=index.begin)
    row, created = sends.reserve(
        {
            "idempotency_key": f"k{minute}",
            "to_addr": customer,
            "from_addr": OURS,
            "body": f"out {minute}",
            "created_at": at,
        }
    )
    assert created
    sends.mark_submitted(row.id, {"sid": f"SM{minute:032d}", "status": status})


def summary(index: MediaIndex) -> list[dict[str, object]]:
    with index.engine.connect() as conn:
        rows = conn.execute(select(thread_summary).order_by(thread_summary.c.key)).mappings()
        return [dict(r) for r in rows]


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
    for raw in ("", "~", "a~", "~b", "a~b~c", "CH" + "1" * 31, "x" * 600 + "~y"):
        assert ThreadKey.decode(raw) is None


def test_the_summary_kept_by_each_write_equals_one_rebuilt_from_the_messages(
    index: MediaIndex,
) -> None:
    inbound(index, 1, "+15550000001", 1)
    inbound(index, 2, "+15550000001", 3, messaging_service_sid=SERVICE)
    inbound(index, 3, "+15550000002", 2, from_channel="whatsapp", to_channel="whatsapp")
    outbound(index, "+15550000001", 4)
    outbound(index, "+15550000001", 0)  # older than the thread's last activity
    inbound(index, 1, "+15550000001", 9)  # a retried MessageSid counts once
    live = summary(index)
    assert {r["key"]: (r["inbound"], r["outbound"]) for r in live} == {
        f"{OURS}~+15550000001": (1, 2),
        f"{SERVICE}~+15550000001": (1, 0),
        f"whatsapp:{OURS}~whatsapp:+15550000002": (1, 0),
    }
    first = next(r for r in live if r["key"] == f"{OURS}~+15550000001")
    assert first["last_at"] == START + timedelta(minutes=4)
    assert first["last_sid"] is None and first["last_outbound_id"] is not None
    with index.begin() as conn:
        assert rebuild(conn) == 3
    assert summary(index) == live


def test_an_older_index_is_backfilled_once_at_start_up(index: MediaIndex) -> None:
    inbound(index, 1, "+15550000001", 1)
    inbound(index, 2, "+15550000002", 2)
    with index.begin() as conn:
        # As an index written before the summary existed: rows, but no summary yet.
        conn.execute(delete(thread_summary))
        conn.execute(delete(meta).where(meta.c.key == BACKFILLED))
        conn.execute(
            insert(messages).values(
                **message(3, from_addr="+15550000002", to_addr=OURS, num_media=0),
                received_at=START + timedelta(minutes=5),
                updated_at=START,
            )
        )
    upgrade(index.engine)
    rows = {r["key"]: r for r in summary(index)}
    assert rows[f"{OURS}~+15550000002"]["inbound"] == 2
    assert rows[f"{OURS}~+15550000002"]["last_sid"] == sid(3)
    assert rows[f"{OURS}~+15550000001"]["inbound"] == 1
    with index.begin() as conn:
        conn.execute(delete(thread_summary))
    upgrade(index.engine)  # done once: a second start-up does not scan again
    assert summary(index) == []


def test_erasing_a_message_recomputes_its_thread(index: MediaIndex) -> None:
    inbound(index, 1, "+15550000001", 1)
    inbound(index, 2, "+15550000001", 2)
    inbound(index, 3, "+15550000002", 3)
    assert index.delete_message(sid(2))
    rows = {r["key"]: r for r in summary(index)}
    assert rows[f"{OURS}~+15550000001"]["inbound"] == 1
    assert rows[f"{OURS}~+15550000001"]["last_sid"] == sid(1)
    assert index.delete_message(sid(1))
    assert [r["key"] for r in summary(index)] == [f"{OURS}~+15550000002"]
    page = list_threads(index)
    assert [t.key.customer for t in page.rows] == ["+15550000002"]


def test_the_longest_addresses_still_make_a_thread(index: MediaIndex) -> None:
    # Channel (32) and address (255) on both sides: the key column takes the widest key.
    channel, address = "c" * 32, "+" + "1" * 254
    inbound(index, 1, address, 1, from_channel=channel, to_channel=channel, to_addr=address)
    (row,) = summary(index)
    assert len(str(row["key"])) == 2 * (32 + 1 + 255) + 1
    assert [t.inbound for t in list_threads(index).rows] == [1]
