"""Per-member delivery receipts of Conversations messages (`onDeliveryUpdated`), through the
webhook and Event Streams, shown by /api/conversations/<CH> and /conversations/<CH>.

Fields: https://www.twilio.com/docs/conversations/delivery-receipts and
https://www.twilio.com/docs/events/event-types/conversations/delivery
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import AUTH
from tests.inbound.test_conversations import PATH, SERVICE, message_params, participant_params
from tests.inbound.test_event_streams import cloud_event, post_events
from tests.support.webhooks import ACCOUNT_SID, WebhookPoster, new_sid

MEMBERS = ("+15551230001", "+15551230002", "+15551230003")


@pytest.fixture
def hooks(make_app: Any) -> WebhookPoster:
    return WebhookPoster(make_app().test_client())


def receipt_params(
    conversation: str,
    message: str,
    participant: str,
    status: str,
    *,
    receipt: str | None = None,
    error: str | None = None,
) -> list[tuple[str, str]]:
    params = [
        ("EventType", "onDeliveryUpdated"),
        ("AccountSid", ACCOUNT_SID),
        ("ConversationSid", conversation),
        ("ChatServiceSid", SERVICE),
        ("MessageSid", message),
        ("DeliveryReceiptSid", receipt or new_sid("DY")),
        ("ChannelMessageSid", new_sid("SM")),
        ("ParticipantSid", participant),
        ("Status", status),
        ("DateCreated", "2026-12-03T12:00:00.000Z"),
        ("DateUpdated", "2026-12-03T12:00:01.000Z"),
        ("RetryCount", "0"),
    ]
    if error is not None:
        params.append(("ErrorCode", error))
    return params


def group(hooks: WebhookPoster) -> tuple[str, list[str], str]:
    """A conversation with three phone members and one message; (CH, MB SIDs, IM)."""
    conversation = new_sid("CH")
    members = [new_sid("MB") for _ in MEMBERS]
    for member, address in zip(members, MEMBERS, strict=True):
        resp = hooks.post(participant_params(conversation, member, address), path=PATH)
        assert resp.status_code == 200
    message = new_sid("IM")
    resp = hooks.post(message_params(message, conversation, body="on my way"), path=PATH)
    assert resp.status_code == 200
    return conversation, members, message


def receipts(hooks: WebhookPoster, conversation: str) -> dict[str, Any]:
    data = hooks.client.get(f"/api/conversations/{conversation}", headers=AUTH).get_json()
    (message,) = data["messages"]
    return {r["address"]: (r["status"], r["error_code"]) for r in message["receipts"]}


def test_receipts_are_kept_per_member_and_only_move_forward(hooks: WebhookPoster) -> None:
    conversation, (a, b, c), message = group(hooks)
    first = new_sid("DY")
    steps = [
        receipt_params(conversation, message, a, "sent", receipt=first),
        receipt_params(conversation, message, a, "delivered", receipt=first),
        receipt_params(conversation, message, b, "undelivered", error="30003"),
        receipt_params(conversation, message, c, "DELIVERED"),  # any case
        # Late and repeated deliveries never move a receipt back.
        receipt_params(conversation, message, a, "sent", receipt=first),
    ]
    for params in steps:
        assert hooks.post(params, path=PATH).status_code == 200
    assert receipts(hooks, conversation) == {
        MEMBERS[0]: ("delivered", None),
        MEMBERS[1]: ("undelivered", 30003),
        MEMBERS[2]: ("delivered", None),
    }
    read = receipt_params(conversation, message, a, "read", receipt=first)
    assert hooks.post(read, path=PATH).status_code == 200
    assert receipts(hooks, conversation)[MEMBERS[0]] == ("read", None)

    page = hooks.client.get(f"/conversations/{conversation}", headers=AUTH)
    html = page.get_data(as_text=True)
    assert 'aria-label="Delivery to each member"' in html
    assert f'{MEMBERS[0]}</span>: <span class="status status-read">read' in html
    assert "(error 30003)" in html


def test_bad_receipts_are_400_with_a_reason_and_change_nothing(hooks: WebhookPoster) -> None:
    conversation, (a, _, _), message = group(hooks)
    bad = receipt_params(conversation, message, a, "lost")
    resp = hooks.post(bad, path=PATH)
    assert resp.status_code == 400 and "not a delivery receipt status" in resp.get_data(True)
    without = [
        (k, v)
        for k, v in receipt_params(conversation, message, a, "sent")
        if k != ("DeliveryReceiptSid")
    ]
    resp = hooks.post(without, path=PATH)
    assert resp.status_code == 400 and "DeliveryReceiptSid" in resp.get_data(as_text=True)
    forged = hooks.post(receipt_params(conversation, message, a, "sent"), path=PATH, signature="x")
    assert forged.status_code == 403
    assert receipts(hooks, conversation) == {}


def test_a_receipt_before_its_message_is_kept(hooks: WebhookPoster) -> None:
    conversation, message, member = new_sid("CH"), new_sid("IM"), new_sid("MB")
    early = receipt_params(conversation, message, member, "sent")
    assert hooks.post(early, path=PATH).status_code == 200
    later = message_params(message, conversation, body="hello")
    assert hooks.post(later, path=PATH).status_code == 200
    address = hooks.post(participant_params(conversation, member, MEMBERS[0]), path=PATH)
    assert address.status_code == 200
    assert receipts(hooks, conversation) == {MEMBERS[0]: ("sent", None)}


def test_stream_delivery_updated_events_reach_the_same_store(hooks: WebhookPoster) -> None:
    conversation, (a, b, _), message = group(hooks)
    data = {
        "AccountSid": ACCOUNT_SID,
        "ConversationSid": conversation,
        "ChatServiceSid": SERVICE,
        "MessageSid": message,
        "DeliveryReceiptSid": new_sid("DY"),
        "ChannelMessageSid": new_sid("SM"),
        "ParticipantSid": a,
        "Status": "read",
        "DateCreated": "2026-12-03T12:00:00.000Z",
        "DateUpdated": "2026-12-03T12:00:01.000Z",
    }
    event = cloud_event("com.twilio.conversations.delivery.updated", data)
    resp = post_events(hooks.client, [event, event])
    assert resp.status_code == 200
    assert receipts(hooks, conversation) == {MEMBERS[0]: ("read", None)}
