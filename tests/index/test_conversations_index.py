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
