"""What Twilio posts to us, parsed and checked into immutable dataclasses.

messaging       inbound messages and status callbacks (and the same InboundMessage
                from a REST Message resource); the field checks the others share
conversations   Conversations post-event webhooks (group MMS) and our send mark
streams         Event Streams deliveries (CloudEvents) as the types above
"""

from receiver.twilio.webhook.conversations import (
    CONVERSATION_EVENTS,
    RECEIPT_STATUSES,
    SEND_MARK_KEY,
    ConversationEvent,
    ConversationMedia,
    DeliveryReceipt,
    conversation_event_type,
    inbound_from_conversation,
    parse_conversation_event,
    parse_conversation_media,
    send_mark,
)
from receiver.twilio.webhook.messaging import (
    MAX_MEDIA,
    Address,
    InboundMessage,
    MediaRef,
    StatusCallback,
    inbound_from_rest,
    parse_address,
    parse_inbound,
    parse_status,
)
from receiver.twilio.webhook.streams import (
    MAX_BATCH,
    STREAM_CONVERSATION_EVENTS,
    STREAM_INBOUND,
    STREAM_STATUSES,
    CloudEvent,
    conversation_from_stream,
    inbound_sid_from_stream,
    parse_cloud_events,
    status_from_stream,
)

__all__ = [
    "CONVERSATION_EVENTS",
    "MAX_BATCH",
    "MAX_MEDIA",
    "RECEIPT_STATUSES",
    "SEND_MARK_KEY",
    "STREAM_CONVERSATION_EVENTS",
    "STREAM_INBOUND",
    "STREAM_STATUSES",
    "Address",
    "CloudEvent",
    "ConversationEvent",
    "ConversationMedia",
    "DeliveryReceipt",
    "InboundMessage",
    "MediaRef",
    "StatusCallback",
    "conversation_event_type",
    "conversation_from_stream",
    "inbound_from_conversation",
    "inbound_from_rest",
    "inbound_sid_from_stream",
    "parse_address",
    "parse_cloud_events",
    "parse_conversation_event",
    "parse_conversation_media",
    "parse_inbound",
    "parse_status",
    "send_mark",
    "status_from_stream",
]
