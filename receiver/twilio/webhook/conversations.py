"""Conversations post-event webhooks (group MMS): events, their media, our send mark."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from receiver.errors import WebhookError
from receiver.twilio import sids
from receiver.twilio.webhook.messaging import (
    MAX_MEDIA,
    Address,
    Fields,
    InboundMessage,
    MediaRef,
    params_dict,
)

# Form-encoded and signed like messaging webhooks; field names as Twilio sends
# them: https://www.twilio.com/docs/conversations/conversations-webhooks
# (the `Media` parameter is a JSON list of {Sid, ContentType, Filename, Size}).

#: Post-event types this receiver keeps; any other type is answered 200 and ignored.
CONVERSATION_EVENTS = frozenset(
    {
        "onMessageAdded",
        "onMessageUpdated",
        "onMessageRemoved",
        "onConversationAdded",
        "onConversationUpdated",
        "onConversationRemoved",
        "onParticipantAdded",
        "onParticipantUpdated",
        "onParticipantRemoved",
        "onDeliveryUpdated",
    }
)
#: Delivery receipt statuses (https://www.twilio.com/docs/conversations/delivery-receipts).
RECEIPT_STATUSES = frozenset({"sent", "delivered", "read", "failed", "undelivered"})


@dataclass(frozen=True)
class ConversationMedia:
    """One item of a Conversations message's `Media` list (an MCS Media resource)."""

    sid: str
    content_type: str | None
    filename: str | None
    size: int | None


@dataclass(frozen=True)
class DeliveryReceipt:
    """One participant's delivery receipt (`onDeliveryUpdated`) of a Conversations message."""

    sid: str
    message_sid: str
    conversation_sid: str
    participant_sid: str | None
    channel_message_sid: str | None
    #: sent, delivered, read, failed or undelivered (lower case).
    status: str
    error_code: int | None


@dataclass(frozen=True)
class ConversationEvent:
    """One Conversations post-event webhook, typed, plus every raw parameter in order."""

    event_type: str
    account_sid: str
    conversation_sid: str
    chat_service_sid: str | None
    messaging_service_sid: str | None
    message_sid: str | None
    participant_sid: str | None
    author: str | None
    body: str | None
    attributes: str | None
    source: str | None
    index: int | None
    identity: str | None
    address: str | None
    proxy_address: str | None
    projected_address: str | None
    friendly_name: str | None
    unique_name: str | None
    state: str | None
    retry_count: int | None
    media: tuple[ConversationMedia, ...]
    params: tuple[tuple[str, str], ...]
    receipt: DeliveryReceipt | None = None

    def to_params_dict(self) -> dict[str, list[str]]:
        """Every raw parameter as name -> values in the order received (JSON-friendly)."""
        return params_dict(self.params)


#: The key of the mark a message we send into a conversation carries in its `Attributes`
#: (a JSON object): {"mms_receiver": {"send": <hash of the outbound row>, "part": <n>}}.
SEND_MARK_KEY = "mms_receiver"


def send_mark(attributes: str | None) -> tuple[str, int] | None:
    """(send, part) of our mark in a message's `Attributes`, or None: not sent by us."""
    try:
        mark = json.loads(attributes or "{}")[SEND_MARK_KEY]
        return str(mark["send"]), int(mark["part"])
    except (ValueError, TypeError, KeyError):
        return None


def conversation_event_type(params: Iterable[tuple[str, str]]) -> str | None:
    """The `EventType` of a Conversations webhook, or None when absent."""
    return Fields(params).text("EventType")


def parse_conversation_event(params: Iterable[tuple[str, str]]) -> ConversationEvent:
    """Validate a Conversations post-event webhook; WebhookError names what is wrong."""
    fields = Fields(params)
    event_type = fields.text("EventType")
    if event_type not in CONVERSATION_EVENTS:
        raise WebhookError(f"EventType {str(event_type)[:40]!r} is not a kept post-event")
    every = f"Twilio sends it with every {event_type}"
    account_sid = fields.required_sid("AccountSid", sids.ACCOUNT, "AC", every)
    conversation_sid = fields.required_sid("ConversationSid", sids.CONVERSATION, "CH", every)
    carried = f"{event_type} always carries it"
    message_sid = (
        fields.required_sid("MessageSid", sids.CONVERSATION_MESSAGE, "IM", carried)
        if event_type.startswith("onMessage")
        else fields.sid("MessageSid", sids.CONVERSATION_MESSAGE, "IM")
    )
    participant_sid = (
        fields.required_sid("ParticipantSid", sids.PARTICIPANT, "MB", carried)
        if event_type.startswith("onParticipant")
        else fields.sid("ParticipantSid", sids.PARTICIPANT, "MB")
    )
    receipt = None
    if event_type == "onDeliveryUpdated":
        receipt = _receipt(fields, conversation_sid, participant_sid)
    return ConversationEvent(
        event_type=event_type,
        account_sid=account_sid,
        conversation_sid=conversation_sid,
        chat_service_sid=fields.sid("ChatServiceSid", sids.CHAT_SERVICE, "IS"),
        messaging_service_sid=fields.sid("MessagingServiceSid", sids.MESSAGING_SERVICE, "MG"),
        message_sid=message_sid,
        participant_sid=participant_sid,
        author=fields.text("Author"),
        body=fields.one("Body"),
        attributes=fields.text("Attributes"),
        source=_clamp(fields.text("Source"), 32),
        index=fields.count("Index"),
        identity=fields.text("Identity"),
        address=_clamp(fields.text("MessagingBinding.Address"), 255),
        proxy_address=_clamp(fields.text("MessagingBinding.ProxyAddress"), 255),
        projected_address=_clamp(fields.text("MessagingBinding.ProjectedAddress"), 255),
        friendly_name=fields.text("FriendlyName"),
        unique_name=fields.text("UniqueName"),
        state=_clamp(fields.text("State"), 16),
        retry_count=fields.count("RetryCount"),
        media=parse_conversation_media(fields.text("Media")),
        params=fields.pairs,
        receipt=receipt,
    )


def _receipt(fields: Fields, conversation_sid: str, participant_sid: str | None) -> DeliveryReceipt:
    """The receipt fields of `onDeliveryUpdated`
    (https://www.twilio.com/docs/conversations/delivery-receipts)."""
    carried = "onDeliveryUpdated always carries it"
    sid = fields.required_sid("DeliveryReceiptSid", sids.RECEIPT, "DY", carried)
    message_sid = fields.required_sid("MessageSid", sids.CONVERSATION_MESSAGE, "IM", carried)
    status = (fields.text("Status") or "").lower()
    if status not in RECEIPT_STATUSES:
        raise WebhookError(
            f"Status {status[:20]!r} is not a delivery receipt status "
            f"({', '.join(sorted(RECEIPT_STATUSES))})"
        )
    code = fields.count("ErrorCode")
    return DeliveryReceipt(
        sid=sid,
        message_sid=message_sid,
        conversation_sid=conversation_sid,
        participant_sid=participant_sid,
        channel_message_sid=_clamp(fields.text("ChannelMessageSid"), 34),
        status=status,
        error_code=code or None,
    )


def parse_conversation_media(raw: str | None) -> tuple[ConversationMedia, ...]:
    """The `Media` JSON list of a Conversations message; WebhookError when malformed."""
    if raw is None:
        return ()
    try:
        items = json.loads(raw)
    except (ValueError, RecursionError):
        raise WebhookError("Media is not valid JSON (a list of {Sid, ContentType, …})") from None
    if not isinstance(items, list):
        raise WebhookError("Media must be a JSON list of media objects")
    if len(items) > MAX_MEDIA:
        raise WebhookError(f"Media lists {len(items)} items; at most {MAX_MEDIA} are accepted")
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise WebhookError(f"Media item {n} is not an object")
        sid = item.get("Sid")
        if not isinstance(sid, str) or not sids.MEDIA.fullmatch(sid):
            raise WebhookError(f"Media item {n} has no Media SID (ME and 32 letters or digits)")
        size = item.get("Size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise WebhookError(f"Media item {n} Size is not a non-negative integer")
        out.append(
            ConversationMedia(
                sid=sid,
                content_type=_optional_text(item.get("ContentType")),
                filename=_optional_text(item.get("Filename")),
                size=size,
            )
        )
    return tuple(out)


def _clamp(value: str | None, size: int) -> str | None:
    return value[:size] if value is not None else None


def _optional_text(value: Any) -> str | None:
    return value[:255] if isinstance(value, str) and value.strip() else None


def inbound_from_conversation(
    event: ConversationEvent, media_url: Callable[[str], str] | None
) -> InboundMessage:
    """The `InboundMessage` of an `onMessageAdded`, so it is stored like any inbound message.

    `From` is the author (a phone number for SMS/MMS participants, an identity
    for chat users), `To` the conversation; `media_url(media_sid)` gives each
    file's MCS Media URL (None: the message carries no media). `params` keeps
    the webhook's own parameters: nothing is made up.
    """
    if event.message_sid is None:
        raise WebhookError("MessageSid is missing")
    if event.media and media_url is None:
        raise WebhookError(
            "ChatServiceSid is missing and the conversation is unknown, "
            "so its media cannot be located in MCS"
        )
    # Index columns hold 255 characters; an identity may be longer (kept whole in params).
    author = (event.author or "system")[:255]
    refs = tuple(
        MediaRef(n, media_url(item.sid), item.content_type)
        for n, item in enumerate(event.media)
        if media_url is not None
    )
    return InboundMessage(
        message_sid=event.message_sid,
        account_sid=event.account_sid,
        messaging_service_sid=event.messaging_service_sid,
        from_=Address(raw=author, channel=(event.source or "chat").lower()[:32], address=author),
        to=Address(
            raw=event.conversation_sid, channel="conversations", address=event.conversation_sid
        ),
        body=event.body or "",
        num_media=len(refs),
        num_segments=None,
        media=refs,
        params=event.params,
    )
