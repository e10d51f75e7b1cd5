"""Event Streams deliveries: CloudEvents 1.0 as the messaging and Conversations types."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from receiver.errors import WebhookError
from receiver.twilio import sids
from receiver.twilio.webhook.conversations import ConversationEvent, parse_conversation_event
from receiver.twilio.webhook.messaging import StatusCallback, parse_status

# https://www.twilio.com/docs/events/webhook-quickstart : a JSON array of
# CloudEvents (`specversion`, `type`, `source`, `id`, `time`, `data`), delivered
# at least once (https://www.twilio.com/docs/events/event-delivery-and-duplication).

#: Events in one delivery; Twilio's batches stay under 64 kB, so far fewer.
MAX_BATCH = 1000
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,128}")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class CloudEvent:
    """One CloudEvent of an Event Streams delivery; `data` is its JSON object."""

    id: str
    type: str
    source: str | None
    time: str | None
    data: Mapping[str, Any]


def parse_cloud_events(payload: Any) -> tuple[CloudEvent, ...]:
    """A single CloudEvent or a batch array, validated; WebhookError names what is wrong."""
    items = payload if isinstance(payload, list) else [payload]
    if len(items) > MAX_BATCH:
        raise WebhookError(f"{len(items)} events in one delivery; at most {MAX_BATCH}")
    events = []
    for n, item in enumerate(items):
        where = f"event {n}"
        if not isinstance(item, dict):
            raise WebhookError(f"{where} is not a JSON object")
        if item.get("specversion") != "1.0":
            raise WebhookError(f'{where}: specversion must be "1.0" (CloudEvents 1.0)')
        event_id, event_type = item.get("id"), item.get("type")
        if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            raise WebhookError(f"{where}: id is missing or not 1-128 printable characters")
        if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
            raise WebhookError(f"{where}: type is missing or malformed")
        data = item.get("data", {})
        if not isinstance(data, dict):
            raise WebhookError(f"{where}: data must be a JSON object")
        source, when = item.get("source"), item.get("time")
        events.append(
            CloudEvent(
                id=event_id,
                type=event_type,
                source=source[:255] if isinstance(source, str) else None,
                time=when[:64] if isinstance(when, str) else None,
                data=data,
            )
        )
    return tuple(events)


#: Messaging.MessageStatus event types and the status each one reports
#: (https://www.twilio.com/docs/events/event-types/messaging/outbound-message).
STREAM_STATUSES = {
    f"com.twilio.messaging.message.{s}": s
    for s in ("queued", "sent", "delivered", "undelivered", "failed", "read")
}
#: Conversations event types and the post-event webhook each one mirrors
#: (https://www.twilio.com/docs/events/event-types/conversations/message).
STREAM_CONVERSATION_EVENTS = {
    f"com.twilio.conversations.{thing}.{verb}": f"on{thing.capitalize()}{verb.capitalize()}"
    for thing in ("message", "conversation", "participant")
    for verb in ("added", "updated", "removed")
} | {
    # Its data has the webhook's fields; Twilio lists the type as discontinued
    # (https://www.twilio.com/docs/events/event-types/conversations/delivery), but a
    # subscription that still delivers it is applied.
    "com.twilio.conversations.delivery.updated": "onDeliveryUpdated",
}


#: A received message (https://www.twilio.com/docs/events/event-types/messaging/inbound-message).
STREAM_INBOUND = "com.twilio.messaging.inbound-message.received"


def inbound_sid_from_stream(event: CloudEvent) -> str:
    """The MessageSid of an inbound-message event; WebhookError when it has none."""
    sid = event.data.get("messageSid")
    if not isinstance(sid, str) or not sids.MESSAGE.fullmatch(sid):
        raise WebhookError("data.messageSid is missing or not a Message SID (SM or MM)")
    return sid


def status_from_stream(event: CloudEvent) -> StatusCallback:
    """A Messaging status event as the same StatusCallback `/twilio/status` gives.

    Its `messageStatus` comes in upper case (`DELIVERED`); parse_status lowers it.
    """
    data = event.data
    names = {
        "messageSid": "MessageSid",
        "accountSid": "AccountSid",
        "messageStatus": "MessageStatus",
        "errorCode": "ErrorCode",
        "rawDlrDoneDate": "RawDlrDoneDate",
        "from": "From",
        "to": "To",
        "messagingServiceSid": "MessagingServiceSid",
    }
    params = [(names[k], _text(v)) for k, v in data.items() if k in names and v is not None]
    if "messageStatus" not in data:
        params.append(("MessageStatus", STREAM_STATUSES.get(event.type, "")))
    return parse_status(params)


def conversation_from_stream(event: CloudEvent) -> ConversationEvent:
    """A Conversations event as the same ConversationEvent the post-event webhook gives.

    Its data names the body `MessageBody` and each media item's SID `MediaSid`,
    and carries no `ChatServiceSid` (taken from the conversation when known).
    """
    params: list[tuple[str, str]] = [("EventType", STREAM_CONVERSATION_EVENTS[event.type])]
    for key, value in event.data.items():
        if key == "EventType" or value is None:
            continue
        if key == "Media" and isinstance(value, list):
            media = [
                {("Sid" if k == "MediaSid" else k): v for k, v in item.items()}
                if isinstance(item, dict)
                else item
                for item in value
            ]
            params.append(("Media", json.dumps(media)))
        elif key == "MessageBody":
            params.append(("Body", _text(value)))
        elif key == "Attributes":
            params.append(("Attributes", _text(value)))  # kept whole: the webhook's is JSON text
        elif isinstance(value, dict):
            params.extend((f"{key}.{k}", _text(v)) for k, v in value.items() if v is not None)
        else:
            params.append((str(key), _text(value)))
    return parse_conversation_event(params)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
