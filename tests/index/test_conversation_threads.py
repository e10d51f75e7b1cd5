"""Conversations as inbox threads, on SQLite and PostgreSQL: keys, summary, backfill, opt-outs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from receiver.index import MediaIndex
from receiver.index.conversations import ConversationIndex
from receiver.index.db import upgrade
from receiver.index.inbox import ThreadKey, list_threads, thread_entries, thread_opted_out
from receiver.index.outbound import OutboundIndex
from receiver.index.replies import ReplyIndex
from receiver.index.schema import meta, thread_summary
from receiver.index.threads import BACKFILLED, rebuild
from tests.index.rows import message, sid

CH = "CH" + "c" * 32
SERVICE = "IS" + "5" * 32
MG = "MG" + "1" * 32
OURS = "+15017122661"
TECH, CUSTOMER = "+15550000001", "+15550000002"
START = datetime(2024, 5, 1, 9, tzinfo=UTC)


def conversation_message(
    index: MediaIndex, n: int, author: str, minute: int, *, media: int = 0
) -> None:
    """A Conversations message stored as the webhook path stores it (see
    `inbound_from_conversation`): the author as sender, the conversation as recipient."""
    index.record_message(
        message(
            n,
            from_addr=author,
            from_channel="sms",
            to_addr=CH,
            to_channel="conversations",
            messaging_service_sid=MG,
            body=f"group {n}",
            num_media=media,
            received_at=START + timedelta(minutes=minute),
        ),
        [
            {"idx": i, "url": f"https://mcs.us1.twilio.com/m/{i}", "declared_type": "image/png"}
            for i in range(media)
        ],
    )
    ConversationIndex(index.engine, begin=index.begin).save_message(
        {"message_sid": sid(n), "conversation_sid": CH, "author": author, "idx": n}
    )


def members(index: MediaIndex) -> ConversationIndex:
    conversations = ConversationIndex(index.engine, begin=index.begin)
    conversations.save_conversation(
        {
            "sid": CH,
            "account_sid": "AC" + "a" * 32,
            "chat_service_sid": SERVICE,
            "messaging_service_sid": MG,
            "friendly_name": "Parcel 42",
        }
    )
    for n, address in enumerate((TECH, CUSTOMER)):
        conversations.save_participant(
            {
                "sid": f"MB{n:032d}",
                "conversation_sid": CH,
                "address": address,
                "proxy_address": OURS,
            }
        )
    return conversations


def send_into(index: MediaIndex, minute: int, message_sid: str | None = None) -> int:
    """A send into the conversation, through the send path's writes (to_addr = the SID)."""
    sends = OutboundIndex(index.engine, begin=index.begin)
    row, created = sends.reserve(
        {
            "idempotency_key": f"reply:k{minute}",
            "to_addr": CH,
            "from_addr": None,
            "body": f"out {minute}",
            "created_at": START + timedelta(minutes=minute),
            "media": [{"source": "eta.png", "content_type": "image/png", "media_sid": "ME1"}],
        }
    )
    assert created
    if message_sid:
        sends.mark_submitted(row.id, {"sid": message_sid, "status": "sent"})
    return row.id


def summary(index: MediaIndex) -> dict[str, dict[str, object]]:
    with index.engine.connect() as conn:
        return {r["key"]: dict(r) for r in conn.execute(select(thread_summary)).mappings()}


def test_a_conversation_is_one_thread_keyed_by_its_sid(index: MediaIndex) -> None:
    members(index)
    conversation_message(index, 1, TECH, 1)
    conversation_message(index, 2, CUSTOMER, 2, media=1)
    outbound_id = send_into(index, 3)
    # A one-to-one exchange with the same customer stays a thread of its own.
    index.record_message(
        message(9, from_addr=CUSTOMER, to_addr=OURS, num_media=0, received_at=START), []
    )
    rows = summary(index)
    assert set(rows) == {CH, f"{OURS}~{CUSTOMER}"}
    assert (rows[CH]["inbound"], rows[CH]["outbound"]) == (2, 1)
    assert rows[CH]["last_outbound_id"] == outbound_id
    # No "<ours>~<author>" thread for the group's messages, whatever the author.
    assert not any(k.startswith(MG) or "conversations:" in k for k in rows)

    first, second = list_threads(index).rows
    assert first.key == ThreadKey(CH) and first.key.conversation == CH
    assert first.title == "Parcel 42" and first.members == (TECH, CUSTOMER)
    assert (first.inbound, first.outbound) == (2, 1)
    assert second.key == ThreadKey(OURS, CUSTOMER) and second.key.conversation is None

    entries = thread_entries(index, ThreadKey(CH))
    assert [(e.inbound.from_addr if e.inbound else "us") for e in entries] == [
        TECH,
        CUSTOMER,
        "us",
    ]
    assert entries[1].inbound is not None and len(entries[1].inbound.media) == 1
    one_to_one = thread_entries(index, ThreadKey(OURS, CUSTOMER))
    assert [e.inbound.sid for e in one_to_one if e.inbound] == [sid(9)]
    # The thread's stored files for the reply box come from its own messages only.
    assert ReplyIndex(index.engine, begin=index.begin).stored_files(ThreadKey(CH)) == []


def test_thread_keys_of_conversations_round_trip() -> None:
    key = ThreadKey.decode(CH)
    assert key == ThreadKey(CH) and key.encode() == CH and key.conversation == CH
    for raw in ("CH" + "c" * 31, "CH" + "z" * 32, "ch" + "c" * 32, CH + "~x"):
        decoded = ThreadKey.decode(raw)
        assert decoded is None or decoded.conversation is None


def test_our_own_message_coming_back_from_the_webhook_is_shown_once(index: MediaIndex) -> None:
    members(index)
    conversation_message(index, 1, TECH, 1)
    send_into(index, 2, message_sid=sid(7))
    # Twilio's onMessageAdded for the message we created carries its IM… SID.
    conversation_message(index, 7, "system", 2)
    entries = thread_entries(index, ThreadKey(CH))
    assert [("in" if e.inbound else "out") for e in entries] == ["in", "out"]


def test_the_summary_rebuilt_and_backfilled_keys_conversations_the_same(
    index: MediaIndex,
) -> None:
    members(index)
    conversation_message(index, 1, TECH, 1)
    conversation_message(index, 2, CUSTOMER, 5)
    send_into(index, 3)
    index.record_message(
        message(9, from_addr=CUSTOMER, to_addr=OURS, num_media=0, received_at=START), []
    )
    live = summary(index)
    with index.begin() as conn:
        assert rebuild(conn) == 2
    assert summary(index) == live
    # An index summarised before conversations had threads of their own is rebuilt once.
    with index.begin() as conn:
        conn.execute(delete(thread_summary))
        conn.execute(delete(meta).where(meta.c.key == BACKFILLED))
    upgrade(index.engine)
    assert summary(index) == live
    assert summary(index)[CH]["last_sid"] == sid(2)


def test_erasing_a_conversation_message_recomputes_its_thread(index: MediaIndex) -> None:
    members(index)
    conversation_message(index, 1, TECH, 1)
    conversation_message(index, 2, CUSTOMER, 2)
    assert index.delete_message(sid(2))
    row = summary(index)[CH]
    assert (row["inbound"], row["last_sid"]) == (1, sid(1))


def test_a_member_who_opted_out_marks_the_thread(index: MediaIndex) -> None:
    conversations = members(index)
    conversation_message(index, 1, TECH, 1)
    assert not thread_opted_out(index, ThreadKey(CH))
    # STOP to another of our numbers does not concern this conversation.
    index.record_keyword(CUSTOMER, "+15550009999", "STOP", sid(3))
    assert conversations.opted_out_members(CH) == []
    index.record_keyword(CUSTOMER, OURS, "STOP", sid(4))
    assert conversations.opted_out_members(CH) == [CUSTOMER]
    assert thread_opted_out(index, ThreadKey(CH))
    assert list_threads(index).rows[0].opted_out
    index.record_keyword(CUSTOMER, OURS, "START", sid(5))
    assert not thread_opted_out(index, ThreadKey(CH))


def test_a_conversation_thread_counts_its_unread_messages(index: MediaIndex) -> None:
    from receiver.index.livefeed import mark_seen, unread_counts

    members(index)
    conversation_message(index, 1, TECH, 1)
    conversation_message(index, 2, CUSTOMER, 2)
    index.record_message(
        message(9, from_addr=CUSTOMER, to_addr=OURS, num_media=0, received_at=START), []
    )
    group, one_to_one = ThreadKey(CH), ThreadKey(OURS, CUSTOMER)
    counts = unread_counts(index, "admin", [group, one_to_one])
    assert counts == {CH: 2, f"{OURS}~{CUSTOMER}": 1}
    # Seen up to the first: the second stays unread; the one-to-one thread is apart.
    mark_seen(index, "admin", group, START + timedelta(minutes=1))
    assert unread_counts(index, "admin", [group, one_to_one]) == {
        CH: 1,
        f"{OURS}~{CUSTOMER}": 1,
    }
