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
