"""POST /twilio/events: signed CloudEvents, deduplicated on id, routed to the same stores."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from receiver.twilio.signature import body_sha256, compute_signature
from tests.conftest import AUTH
from tests.inbound.test_conversations import (
    PATH as CONVERSATIONS_PATH,
)
from tests.inbound.test_conversations import (
    SERVICE,
    media_state,
    message_params,
)
from tests.support.fake_mcs import FakeMcs
from tests.support.samples import jpeg
from tests.support.waiting import wait_for
from tests.support.webhooks import ACCOUNT_SID, TOKEN, WebhookPoster, new_sid

BASE = "http://localhost"


def post_events(client: Any, payload: Any, *, signed: bool = True) -> Any:
    """POST a CloudEvents body the way an Event Streams webhook sink does: the URL carries
    bodySHA256 and X-Twilio-Signature signs that URL
    (https://www.twilio.com/docs/usage/webhooks/webhooks-security)."""
    body = json.dumps(payload).encode()
    path = f"/twilio/events?bodySHA256={body_sha256(body)}"
    headers = {"Content-Type": "application/json"}
    headers["X-Twilio-Signature"] = compute_signature(TOKEN, BASE + path) if signed else "forged"
    return client.post(path, data=body, headers=headers)


def cloud_event(event_type: str, data: dict[str, Any], event_id: str | None = None) -> dict:
    return {
        "specversion": "1.0",
        "type": event_type,
        "source": "/2010-04-01/Accounts/AC/Messages/SM.json",
        "id": event_id or "EZ" + secrets.token_hex(16),
        "dataschema": "https://events-schemas.twilio.com/Messaging.MessageStatus/7",
        "datacontenttype": "application/json",
        "time": "2026-12-03T12:00:00.000Z",
        "data": data,
    }


def status_event(sid: str, status: str) -> dict:
    """A Messaging.MessageStatus event (fields of
    https://www.twilio.com/docs/events/event-types/messaging/outbound-message)."""
    return cloud_event(
        f"com.twilio.messaging.message.{status.lower()}",
        {
            "messageSid": sid,
            "accountSid": ACCOUNT_SID,
            "messageStatus": status,
            "from": "+15557654321",
            "to": "+15551230001",
            "eventName": f"com.twilio.messaging.message.{status.lower()}",
            "apiVersion": "2010-04-01",
            "timestamp": "2026-12-03T12:00:00.000Z",
        },
    )


def message_added(sid: str, conversation: str, body: str, media: list[dict] | None = None) -> dict:
    """com.twilio.conversations.message.added: `MessageBody`, `Media` with `MediaSid`, no
    ChatServiceSid (https://www.twilio.com/docs/events/event-types/conversations/message)."""
    data: dict[str, Any] = {
        "AccountSid": ACCOUNT_SID,
        "ConversationSid": conversation,
        "MessageSid": sid,
        "Index": 0,
        "Author": "+15551230001",
        "ParticipantSid": new_sid("MB"),
        "MessageBody": body,
        "DateCreated": "2026-12-03T12:00:00.000Z",
    }
    if media is not None:
        data["Media"] = media
    return cloud_event("com.twilio.conversations.message.added", data)


def sent_message(app: Any) -> str:
    """An outbound row with a MessageSid, as after a send."""
    outbound = app.extensions["receiver"].outbound_index
    row, _ = outbound.reserve({"to_addr": "+15551230001", "idempotency_key": secrets.token_hex(8)})
    sid = new_sid("MM")
    outbound.mark_submitted(row.id, {"sid": sid, "status": "queued"})
    return sid


def streams(app: Any) -> Any:
    return app.extensions["receiver"].streams.index


def test_forged_or_unsigned_delivery_is_403_and_changes_nothing(app: Any, client: Any) -> None:
    event = status_event(new_sid("SM"), "DELIVERED")
    assert post_events(client, [event], signed=False).status_code == 403
    assert client.post("/twilio/events", json=[event]).status_code == 403
    assert streams(app).count() == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([{"type": "x", "id": "1"}], "specversion"),
        ([{"specversion": "1.0", "type": "x"}], "id"),
        ([{"specversion": "1.0", "id": "1", "type": "x", "data": []}], "data"),
        (["text"], "not a JSON object"),
    ],
)
def test_malformed_delivery_is_400_with_a_reason(
    app: Any, client: Any, payload: Any, reason: str
) -> None:
    resp = post_events(client, payload)
    assert resp.status_code == 400
    assert reason in resp.get_json()["message"]
    assert streams(app).count() == 0


def test_a_signed_form_body_is_415_and_an_unsigned_one_learns_nothing(client: Any) -> None:
    params = [("a", "b")]
    signed = compute_signature(TOKEN, BASE + "/twilio/events", params)
    resp = client.post("/twilio/events", data=dict(params), headers={"X-Twilio-Signature": signed})
    assert resp.status_code == 415
    assert "application/json" in resp.get_json()["message"]
    assert client.post("/twilio/events", data={"a": "b"}).status_code == 403


def test_batch_of_100_with_10_duplicates_is_applied_once_each(app: Any, client: Any) -> None:
    sid = sent_message(app)
    unique = [status_event(sid, s) for s in ("QUEUED", "SENT", "DELIVERED")]
    unique += [cloud_event("com.twilio.example.unknown", {"n": n}) for n in range(87)]
    batch = unique + unique[:10]
    assert len(batch) == 100
    resp = post_events(client, batch)
    assert resp.status_code == 200
    assert resp.get_json() == {
        "received": 100,
        "duplicates": 10,
        "applied": 3,
        "kept": 87,
        "errors": 0,
    }
    assert streams(app).count() == 90
    # Upper-case statuses compare case-insensitively; the status only moves forward.
    assert app.extensions["receiver"].outbound_index.by_sid(sid).status == "delivered"
    late = post_events(client, [status_event(sid, "SENT")])
    assert late.get_json()["applied"] == 1
    assert app.extensions["receiver"].outbound_index.by_sid(sid).status == "delivered"
    # The whole batch again (Twilio retries for up to 4 hours): nothing new.
    again = post_events(client, batch).get_json()
    assert again["duplicates"] == 100 and streams(app).count() == 91
    kept = streams(app).get(unique[-1]["id"])
    assert kept["outcome"] == "kept" and json.loads(kept["data"]) == {"n": 86}


@pytest.mark.parametrize("webhook_first", [True, False])
def test_same_message_by_webhook_and_stream_is_stored_once(
    app: Any, client: Any, webhook_first: bool
) -> None:
    poster = WebhookPoster(client)
    conversation, sid = new_sid("CH"), new_sid("IM")
    deliveries = [
        lambda: poster.post(message_params(sid, conversation, body="hi"), path=CONVERSATIONS_PATH),
        lambda: post_events(client, [message_added(sid, conversation, "hi")]),
    ]
    for deliver in deliveries if webhook_first else deliveries[::-1]:
        assert deliver().status_code == 200
    svc = app.extensions["receiver"]
    assert svc.conversations.index.message_sids(conversation) == [sid]
    found = client.get("/api/messages?q=hi&from=%2B15551230001", headers=AUTH).get_json()
    assert [m["sid"] for m in found["messages"]] == [sid]
    assert found["messages"][0]["conversation_sid"] == conversation


@pytest.mark.parametrize("as_object", [True, False], ids=["attributes-object", "attributes-text"])
def test_a_message_we_sent_coming_back_by_stream_is_not_an_arrival(
    client: Any, as_object: bool
) -> None:
    conversation, ours, theirs = new_sid("CH"), new_sid("IM"), new_sid("IM")
    mark = {"mms_receiver": {"send": "4f1c2b", "part": 0}}
    echo = message_added(ours, conversation, "on our way")
    echo["data"]["Attributes"] = mark if as_object else json.dumps(mark)
    member = message_added(theirs, conversation, "thanks")
    assert post_events(client, [echo, member]).status_code == 200
    assert client.get(f"/api/messages/{ours}", headers=AUTH).status_code == 404
    assert client.get(f"/api/messages/{theirs}", headers=AUTH).status_code == 200


def test_stream_media_uses_the_service_of_a_known_conversation(
    make_app: Any,
) -> None:
    with FakeMcs(ACCOUNT_SID, TOKEN) as mcs:
        app = make_app(
            TWILIO_MCS_BASE=mcs.url,
            TWILIO_CONVERSATIONS_BASE=mcs.url,
            RECEIVER_MEDIA_HOSTS=mcs.host_port,
        )
        client = app.test_client()
        conversation = new_sid("CH")
        added = cloud_event(
            "com.twilio.conversations.conversation.added",
            {"AccountSid": ACCOUNT_SID, "ConversationSid": conversation, "ChatServiceSid": SERVICE},
        )
        media_sid = mcs.add(SERVICE, jpeg(20, 20), "image/jpeg")
        item = {"MediaSid": media_sid, "ContentType": "image/jpeg", "Filename": "a.jpg", "Size": 9}
        sid = new_sid("IM")
        resp = post_events(client, [added, message_added(sid, conversation, "pic", [item])])
        assert resp.get_json()["applied"] == 2
        assert wait_for(lambda: media_state(client, sid) == [("stored", None)])
        # Media of a conversation never seen, which Twilio does not know either (404):
        # the event is kept with the reason, not lost.
        stray = message_added(new_sid("IM"), new_sid("CH"), "pic", [item])
        assert post_events(client, [stray]).get_json()["errors"] == 1
        assert "ChatServiceSid" in streams(app).get(stray["id"])["detail"]
        assert mcs.count(f"/v1/Conversations/{stray['data']['ConversationSid']}") == 1


def test_stream_media_of_an_unknown_conversation_asks_twilio_for_its_service(
    make_app: Any,
) -> None:
    with FakeMcs(ACCOUNT_SID, TOKEN) as mcs:
        app = make_app(
            TWILIO_MCS_BASE=mcs.url,
            TWILIO_CONVERSATIONS_BASE=mcs.url,
            RECEIVER_MEDIA_HOSTS=mcs.host_port,
        )
        client = app.test_client()
        conversation = mcs.add_conversation(SERVICE, ["+15551230001"], "+15557654321")
        media_sid = mcs.add(SERVICE, jpeg(20, 20), "image/jpeg")
        item = {"MediaSid": media_sid, "ContentType": "image/jpeg", "Filename": "a.jpg", "Size": 9}
        sid = new_sid("IM")
        resp = post_events(client, [message_added(sid, conversation, "pic", [item])])
        assert resp.get_json()["applied"] == 1
        assert wait_for(lambda: media_state(client, sid) == [("stored", None)])
        conversations = app.extensions["receiver"].conversations.index
        assert conversations.service_of(conversation) == SERVICE
        # Known from now on: a second message does not ask again.
        other = mcs.add(SERVICE, jpeg(24, 24), "image/jpeg")
        second = new_sid("IM")
        item2 = {**item, "MediaSid": other}
        resp = post_events(client, [message_added(second, conversation, "2", [item2])])
        assert resp.get_json()["applied"] == 1
        assert wait_for(lambda: media_state(client, second) == [("stored", None)])
        assert mcs.count(f"/v1/Conversations/{conversation}") == 1


def inbound_received(sid: str) -> dict:
    """com.twilio.messaging.inbound-message.received (fields of
    https://www.twilio.com/docs/events/event-types/messaging/inbound-message)."""
    return cloud_event(
        "com.twilio.messaging.inbound-message.received",
        {
            "messageSid": sid,
            "accountSid": ACCOUNT_SID,
            "from": "+15551230001",
            "to": "+15557654321",
            "numMedia": 1,
            "body": "missed",
            "eventName": "com.twilio.messaging.inbound-message.received",
        },
    )


def test_a_missed_webhook_is_filled_in_from_the_stream(make_app: Any) -> None:
    from tests.support.fake_twilio import FakeTwilio

    with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TOKEN, numbers=["+15557654321"]) as fake:
        app = make_app(TWILIO_API_BASE=fake.url, RECEIVER_MEDIA_HOSTS=fake.host_port)
        client = app.test_client()
        sid = fake.add_inbound(
            from_="+15551230001",
            to="+15557654321",
            body="missed",
            media=[(jpeg(30, 30), "image/jpeg")],
        )
        resp = post_events(client, [inbound_received(sid)])
        assert resp.status_code == 200 and resp.get_json()["applied"] == 1
        assert wait_for(lambda: media_state(client, sid) == [("stored", None)])
        got = client.get(f"/api/messages/{sid}", headers=AUTH).get_json()
        assert got["body"] == "missed"
        # Known now: a second event (another id) fetches nothing more.
        second = inbound_received(sid)
        assert post_events(client, [second]).get_json()["applied"] == 1
        assert streams(app).get(second["id"])["detail"] == "known"
        # Twilio's REST API failing: 503, and the event is not marked delivered.
        other = fake.add_inbound(from_="+15551230001", to="+15557654321", body="later")
        fake.fail_next(4, 500)  # every attempt of the REST client's retry policy
        failing = inbound_received(other)
        assert post_events(client, [failing]).status_code == 503
        assert streams(app).get(failing["id"]) is None
        assert post_events(client, [failing]).status_code == 200
        assert client.get(f"/api/messages/{other}", headers=AUTH).status_code == 200


def test_sink_test_event_is_kept_and_its_test_id_logged(
    app: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    event = cloud_event("com.twilio.eventstreams.test-event", {"test_id": "test-123"})
    with caplog.at_level("WARNING", logger="receiver.inbound.streams"):
        assert post_events(client, event).get_json()["kept"] == 1  # a single, unbatched event
    assert "test_id=test-123" in caplog.text
    assert streams(app).get(event["id"])["outcome"] == "kept"
