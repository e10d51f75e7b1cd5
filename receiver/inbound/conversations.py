"""Conversations workflow: post-event webhooks -> the index, messages -> the pipeline.

`onMessageAdded` is stored like any inbound message (its `IM…` MessageSid is
the idempotency key), plus its thread fields; its media rows are committed
`pending` and handed to the pipeline's pool without waiting, because
Conversations gives the webhook 5 s in all
(https://www.twilio.com/docs/conversations/conversations-webhooks).
A message we sent ourselves (our mark in its `Attributes`) comes back as an
`onMessageAdded` too; it is no arrival and is not recorded again (its
outbound row has it). Conversation and participant events keep the thread's
metadata current. An
event may arrive before its conversation's own: a placeholder row is made
and filled in later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from receiver.errors import ConfigError
from receiver.inbound.pipeline import Pipeline
from receiver.index.conversations import ConversationIndex
from receiver.twilio.mcs import mcs_media_url
from receiver.twilio.rest import TwilioRest, TwilioRestError
from receiver.twilio.webhook import ConversationEvent, inbound_from_conversation, send_mark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConversationOutcome:
    """What handling one event did (for the webhook's log and tests)."""

    event_type: str
    #: recorded, duplicate, updated, own (a message we sent), "receipt <status>"
    result: str


class Conversations:
    """Applies Conversations events to the index; messages go through the pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        index: ConversationIndex,
        *,
        mcs_base: str,
        lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.index = index
        self.mcs_base = mcs_base
        #: The Chat Service of a conversation never seen (Twilio's REST API), or None.
        self.lookup = lookup

    def handle(self, event: ConversationEvent) -> ConversationOutcome:
        """Apply one post-event; idempotent, so retries and a second path change nothing."""
        kind = event.event_type
        if event.receipt is not None:
            # One member's delivery of a message (sent, delivered, read, …), kept per member.
            self._placeholder(event)
            status = self.index.save_receipt(
                {
                    "sid": event.receipt.sid,
                    "message_sid": event.receipt.message_sid,
                    "conversation_sid": event.conversation_sid,
                    "participant_sid": event.receipt.participant_sid,
                    "channel_message_sid": event.receipt.channel_message_sid,
                    "status": event.receipt.status,
                    "error_code": event.receipt.error_code,
                }
            )
            return ConversationOutcome(kind, f"receipt {status}")
        if kind.startswith("onMessage"):
            return self._message(event)
        if kind.startswith("onParticipant"):
            assert event.participant_sid is not None  # the parser requires it
            self._placeholder(event)
            if kind == "onParticipantRemoved":
                self.index.mark_removed("participant", event.participant_sid)
            else:
                self.index.save_participant(
                    {
                        "sid": event.participant_sid,
                        "conversation_sid": event.conversation_sid,
                        "identity": event.identity,
                        "address": event.address,
                        "proxy_address": event.proxy_address,
                        "projected_address": event.projected_address,
                    }
                )
            return ConversationOutcome(kind, "updated")
        self.index.save_conversation(self._conversation_row(event), overwrite=True)
        if kind == "onConversationRemoved":
            self.index.mark_removed("conversation", event.conversation_sid)
        return ConversationOutcome(kind, "updated")

    def _message(self, event: ConversationEvent) -> ConversationOutcome:
        sid = event.message_sid
        assert sid is not None  # the parser requires it for onMessage*
        self._placeholder(event)
        if event.event_type == "onMessageRemoved":
            self.index.mark_removed("message", sid)
            return ConversationOutcome(event.event_type, "updated")
        if event.event_type == "onMessageUpdated" and self.index.update_message(
            sid, body=event.body, attributes=event.attributes
        ):
            return ConversationOutcome(event.event_type, "updated")
        if send_mark(event.attributes) is not None:
            # Our own send coming back (Twilio calls the webhook for every message
            # added, ours too): its outbound row has it; it is not an arrival.
            log.debug("conversations: %s %s is one we sent", event.event_type, sid)
            return ConversationOutcome(event.event_type, "own")
        # onMessageAdded, or an update of a message we never saw added: record it.
        service = self._service_of(event)
        msg = inbound_from_conversation(
            event,
            (lambda media_sid: mcs_media_url(self.mcs_base, service, media_sid))
            if service
            else None,
        )
        result = self.pipeline.ingest(msg)
        # Written whether or not the message was new: a crash between the two
        # inserts is repaired by Twilio's retry.
        self.index.save_message(
            {
                "message_sid": sid,
                "conversation_sid": event.conversation_sid,
                "chat_service_sid": service,
                "author": event.author,
                "participant_sid": event.participant_sid,
                "source": event.source,
                "idx": event.index,
                "attributes": event.attributes,
            }
        )
        # Media goes to the pool (deadline 0): the answer never waits for MCS.
        self.pipeline.process_message(sid, deadline=0, ingested=result)
        return ConversationOutcome(event.event_type, "recorded" if result.created else "duplicate")

    def _service_of(self, event: ConversationEvent) -> str | None:
        """The message's Chat Service: given, known, or (a stream event of a conversation
        never seen, which names none) asked of Twilio and kept."""
        service = event.chat_service_sid or self.index.service_of(event.conversation_sid)
        if service is None and event.media and self.lookup is not None:
            service = self.lookup(event.conversation_sid)
            if service is not None:
                self.index.save_conversation(
                    {
                        "sid": event.conversation_sid,
                        "account_sid": event.account_sid,
                        "chat_service_sid": service,
                    },
                    overwrite=False,
                )
        return service

    def _placeholder(self, event: ConversationEvent) -> None:
        """Make sure the conversation exists, filling in only what is still unknown."""
        self.index.save_conversation(self._conversation_row(event), overwrite=False)

    @staticmethod
    def _conversation_row(event: ConversationEvent) -> dict[str, Any]:
        row: dict[str, Any] = {
            "sid": event.conversation_sid,
            "account_sid": event.account_sid,
            "chat_service_sid": event.chat_service_sid,
            "messaging_service_sid": event.messaging_service_sid,
        }
        if event.event_type.startswith("onConversation"):
            row.update(
                friendly_name=event.friendly_name,
                unique_name=event.unique_name,
                state=event.state,
                attributes=event.attributes,
            )
        return row


def service_lookup(rest: Callable[[], TwilioRest]) -> Callable[[str], str | None]:
    """`GET /v1/Conversations/{CH}` -> its `chat_service_sid`, None when Twilio cannot say
    (https://www.twilio.com/docs/conversations/api/conversation-resource)."""

    def lookup(conversation_sid: str) -> str | None:
        try:
            found = rest().fetch_conversation(conversation_sid).get("chat_service_sid")
        except (TwilioRestError, ConfigError) as exc:
            log.warning("cannot look up conversation %s: %s", conversation_sid, exc)
            return None
        return found if isinstance(found, str) and found.startswith("IS") else None

    return lookup
