"""Conversations and Event Streams rows on SQLite and PostgreSQL: upserts, placeholders, dedupe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.inbound.test_conversations import PATH, message_params, participant_params
from tests.inbound.test_event_streams import message_added, post_events
from tests.support.webhooks import ACCOUNT_SID, WebhookPoster, new_sid


def test_thread_rows_on_both_databases(make_app: Any, db_url: str) -> None:
    app = make_app(RECEIVER_DATABASE_URL=db_url)
    client = app.test_client()
    post = WebhookPoster(client)
    index = app.extensions["receiver"].conversations.index
    conversation = new_sid("CH")
    # A message before its conversation: a placeholder, filled in (not overwritten) later.
    first = new_sid("IM")
    early = message_params(first, conversation, service=None, index=1)
    assert post.post(early, path=PATH).status_code == 200
    assert index.get(conversation).chat_service_sid is None
    added = [
        ("EventType", "onConversationAdded"),
        ("AccountSid", ACCOUNT_SID),
        ("ConversationSid", conversation),
        ("ChatServiceSid", "IS" + "b" * 32),
        ("FriendlyName", "Repair"),
    ]
    assert post.post(added, path=PATH).status_code == 200
    assert post.post(message_params(new_sid("IM"), conversation), path=PATH).status_code == 200
    row = index.get(conversation)
    assert row.chat_service_sid == "IS" + "b" * 32 and row.friendly_name == "Repair"
    member = new_sid("MB")
    assert (
        post.post(participant_params(conversation, member, "+1555"), path=PATH).status_code == 200
    )
    assert [p.sid for p in index.participants(conversation)] == [member]
    thread = index.thread(conversation)
    assert [m.sid for m in thread][-1] == first  # Index 1 after Index 0
    # One message delivered concurrently by webhook and stream: stored once.
    sid = new_sid("IM")
    jobs = [
        lambda: post.post(message_params(sid, conversation, index=5), path=PATH).status_code,
        lambda: post_events(client, [message_added(sid, conversation, "hi")]).status_code,
    ] * 3
    with ThreadPoolExecutor(6) as pool:
        assert set(pool.map(lambda job: job(), jobs)) == {200}
    assert index.message_sids(conversation).count(sid) == 1
    streams = app.extensions["receiver"].streams.index
    assert streams.count() == 3
    assert streams.get("missing") is None


def test_long_values_fit_the_columns(make_app: Any, db_url: str) -> None:
    app = make_app(RECEIVER_DATABASE_URL=db_url)
    post = WebhookPoster(app.test_client())
    conversation, sid = new_sid("CH"), new_sid("IM")
    long = "x" * 300
    member = [*participant_params(conversation, new_sid("MB"), "+1" + "5" * 300)]
    member.append(("Identity", long))
    assert post.post(member, path=PATH).status_code == 200
    params = message_params(sid, conversation, author=long)
    params = [(k, "S" * 40 if k == "Source" else v) for k, v in params]
    assert post.post(params, path=PATH).status_code == 200
    state = [("EventType", "onConversationUpdated"), ("AccountSid", ACCOUNT_SID)]
    state += [("ConversationSid", conversation), ("State", "s" * 40)]
    assert post.post(state, path=PATH).status_code == 200
    index = app.extensions["receiver"].conversations.index
    assert index.participants(conversation)[0].identity == long
    assert index.thread(conversation)[0].from_addr == long[:255]


def test_receipts_move_forward_on_both_databases(make_app: Any, db_url: str) -> None:
    from datetime import timedelta

    from receiver.index.schema import utcnow
    from tests.inbound.test_conversation_receipts import receipt_params
    from tests.inbound.test_event_streams import cloud_event

    app = make_app(RECEIVER_DATABASE_URL=db_url)
    client = app.test_client()
    post = WebhookPoster(client)
    index = app.extensions["receiver"].conversations.index
    conversation, message, member = new_sid("CH"), new_sid("IM"), new_sid("MB")
    assert post.post(participant_params(conversation, member, "+15550001"), path=PATH).status_code
    receipt = new_sid("DY")
    # Concurrent deliveries of the same receipt, in every order: one row, the furthest status.
    jobs = [
        receipt_params(conversation, message, member, status, receipt=receipt)
        for status in ("sent", "read", "delivered", "sent", "delivered", "read")
    ]
    with ThreadPoolExecutor(6) as pool:
        codes = set(pool.map(lambda p: post.post(p, path=PATH).status_code, jobs))
    assert codes == {200}
    (row,) = index.receipts([message])[message]
    assert (row.sid, row.address, row.status) == (receipt, "+15550001", "read")
    assert (
        index.save_receipt(
            {
                "sid": receipt,
                "message_sid": message,
                "conversation_sid": conversation,
                "status": "failed",
            }
        )
        == "read"
    )
    assert index.receipts([]) == {} and index.receipts([new_sid("IM")]) != {}
    # The sink test event's test_id is found by configure-event-stream in the same index.
    since = utcnow() - timedelta(seconds=5)
    test = cloud_event("com.twilio.eventstreams.test-event", {"test_id": "TI123"})
    assert post_events(client, test).status_code == 200
    streams = app.extensions["receiver"].streams.index
    assert streams.test_ids("com.twilio.eventstreams.test-event", since) == ["TI123"]
    assert streams.test_ids("com.twilio.eventstreams.test-event", utcnow()) == []
