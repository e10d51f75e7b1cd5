"""Sending into a Conversation (group MMS): the same prepare/fit core, media through MCS.

learn         the conversation's Chat Service and participants (index, else the REST API)
reserve       one outbound row per idempotency key (to_addr = the CH… SID)
opt-out       any member's STOP refuses the whole message: a group message reaches everyone
prepare       the `Preparer` with the MMS rules (every SMS member must be +1), each file
              uploaded to the conversation's own Chat Service instead of being hosted
rate limit    per participant address
submit        POST …/Conversations/{CH}/Messages: the body with the first file, then one
              message per further file (`MediaSid` is a single field)

Group texting rules: https://www.twilio.com/docs/conversations/group-texting ;
message creation: https://www.twilio.com/docs/conversations/api/conversation-message-resource ;
upload: https://www.twilio.com/docs/conversations/api/media-resource .
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, BinaryIO

from receiver.errors import OutboundError
from receiver.index.conversations import ConversationIndex
from receiver.index.outbound import OutboundIndex
from receiver.outbound.prepare import PreparedMedia, PreparedMessage, Preparer
from receiver.outbound.request import OutboundRequest, mask_number, redact, validate_request
from receiver.outbound.send import OPTED_OUT_ERROR, REJECTING_STATUSES, Sender, SendResult
from receiver.ratelimit import RateLimiter
from receiver.twilio.mcs import McsClient
from receiver.twilio.rest import TwilioRest, TwilioRestError

if TYPE_CHECKING:
    from receiver.index import MediaIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Members:
    """What sending needs to know about a conversation."""

    chat_service_sid: str
    #: The members' own phone (or channel) addresses: the recipients.
    addresses: tuple[str, ...]
    #: Our side: proxy/projected addresses and the Messaging Service (opt-outs are per sender).
    senders: tuple[str, ...]


class ConversationSender:
    """Sends one message into a conversation under its idempotency key."""

    def __init__(
        self,
        index: MediaIndex,
        outbound_index: OutboundIndex,
        conversations: ConversationIndex,
        preparer: Preparer,
        rest: Callable[[], TwilioRest],
        mcs: McsClient,
        limiter: RateLimiter,
    ) -> None:
        self.index = index
        self.outbound_index = outbound_index
        self.conversations = conversations
        self.preparer = preparer
        self.rest = rest
        self.mcs = mcs
        self.limiter = limiter

    def send(self, request: OutboundRequest, *, dry_run: bool = False) -> SendResult:
        """Send into `request.conversation_sid`; errors as `Sender.send`."""
        validate_request(request)
        sid = str(request.conversation_sid)
        rest = self.rest()  # fails (ConfigError) before anything is recorded
        members = self.members(rest, sid)
        # Group MMS exists only between US/CA (+1) numbers; chat members take any file.
        phones = [a for a in members.addresses if a.startswith("+")]
        mms_ok = all(a.startswith("+1") for a in phones)
        if dry_run:
            prepared = self.preparer.prepare(request, host=False, mms_ok=mms_ok)
            return SendResult(None, request.idempotency_key, None, "dry-run", False, prepared)
        row, created = self.outbound_index.reserve(
            {
                "idempotency_key": request.idempotency_key,
                "to_addr": sid,
                "from_addr": request.author,
                "body": request.body,
                "media": [{"source": redact(m)} for m in request.media],
                "fallback": request.fallback,
            }
        )
        if not created:
            if row.sid or row.status == "submitting":
                # Sent, or cut off mid-send: never sent twice under one key.
                return Sender._result(row, duplicate=True)
            self.outbound_index.retry(row.id)
        opted = [a for a in members.addresses if self.index.is_opted_out(a, members.senders)]
        if opted:
            message = (
                f"{', '.join(mask_number(a) for a in opted)} opted out (replied STOP); a group "
                "message reaches every member, so nothing was sent: remove them from the "
                "conversation, or wait until they text START"
            )
            self.outbound_index.finish(
                row.id, "refused", error_code=OPTED_OUT_ERROR, error_message=message
            )
            raise OutboundError(message, "opted_out")

        def upload(item: PreparedMedia, payload: BinaryIO) -> PreparedMedia:
            payload.seek(0)
            media_sid = self.mcs.upload(members.chat_service_sid, payload.read(), item.content_type)
            return replace(item, media_sid=media_sid)

        try:
            prepared = self.preparer.prepare(request, mms_ok=mms_ok, upload=upload)
        except OutboundError as exc:
            self.outbound_index.finish(row.id, "refused", error_message=str(exc))
            raise
        self.outbound_index.update_prepared(
            row.id,
            body=prepared.body,
            media=[m.to_json() for m in prepared.media],
            fallback="link" if prepared.mode == "link" else request.fallback,
        )
        parts = _parts(prepared)
        for address in members.addresses or (sid,):
            self.limiter.acquire(address, len(parts))
        if not self.outbound_index.claim(row.id):
            current = self.outbound_index.get(row.id) or row
            return Sender._result(current, duplicate=True, prepared=prepared)
        return self._submit(rest, row.id, request, prepared, parts)

    def members(self, rest: TwilioRest, sid: str) -> Members:
        """The conversation's service and members: from the index, else learnt from Twilio
        (GET /v1/Conversations/{CH} and its Participants) and kept."""
        service = self.conversations.service_of(sid)
        record = self.conversations.get(sid)
        if service is None:
            found = self._twilio(rest.fetch_conversation, sid)
            service = found.get("chat_service_sid")
            if not isinstance(service, str) or not service.startswith("IS"):
                raise OutboundError(
                    f"Twilio's conversation {sid} names no Chat Service", "invalid_conversation"
                )
            self.conversations.save_conversation(
                {
                    "sid": sid,
                    "account_sid": found.get("account_sid") or rest.account_sid,
                    "chat_service_sid": service,
                    "messaging_service_sid": found.get("messaging_service_sid"),
                    "friendly_name": found.get("friendly_name"),
                    "unique_name": found.get("unique_name"),
                    "state": found.get("state"),
                },
                overwrite=False,
            )
            record = self.conversations.get(sid)
        participants = self.conversations.participants(sid)
        if not participants:
            for item in self._twilio(rest.list_conversation_participants, sid):
                binding = item.get("messaging_binding") or {}
                self.conversations.save_participant(
                    {
                        "sid": item.get("sid"),
                        "conversation_sid": sid,
                        "identity": item.get("identity"),
                        "address": binding.get("address"),
                        "proxy_address": binding.get("proxy_address"),
                        "projected_address": binding.get("projected_address"),
                    }
                )
            participants = self.conversations.participants(sid)
        addresses = tuple(sorted({p.address for p in participants if p.address}))
        senders = {a for p in participants for a in (p.proxy_address, p.projected_address) if a} | (
            {record.messaging_service_sid} if record and record.messaging_service_sid else set()
        )
        return Members(service, addresses, tuple(sorted(senders)))

    @staticmethod
    def _twilio(call: Callable[[str], Any], sid: str) -> Any:
        try:
            return call(sid)
        except TwilioRestError as exc:
            if exc.status == 404:
                raise OutboundError(
                    f"Twilio knows no conversation {sid}: check the CH… SID and the account",
                    "unknown_conversation",
                ) from None
            raise

    def _submit(
        self,
        rest: TwilioRest,
        row_id: int,
        request: OutboundRequest,
        prepared: PreparedMessage,
        parts: list[tuple[str | None, str | None]],
    ) -> SendResult:
        sid = str(request.conversation_sid)
        created: list[dict[str, Any]] = []
        try:
            for body, media_sid in parts:
                created.append(
                    rest.create_conversation_message(
                        sid, author=request.author, body=body, media_sid=media_sid
                    )
                )
        except TwilioRestError as exc:
            if created:
                # Part of it is in the conversation: keep that, never resend it.
                self.outbound_index.mark_submitted(row_id, _resource(created[0]))
            elif not exc.maybe_sent and exc.status in REJECTING_STATUSES:
                self.outbound_index.finish(
                    row_id, "rejected", error_code=exc.code, error_message=str(exc)
                )
            elif not exc.maybe_sent:
                self.outbound_index.release(row_id, error_message=str(exc))
            raise
        row = self.outbound_index.mark_submitted(row_id, _resource(created[0]))
        log.info("sent %s into %s (%d messages, %s)", row.sid, sid, len(created), prepared.mode)
        return Sender._result(row, duplicate=False, prepared=prepared)


def _parts(prepared: PreparedMessage) -> list[tuple[str | None, str | None]]:
    """(Body, MediaSid) of each message to create: the body rides with the first file."""
    media_sids = [m.media_sid for m in prepared.media if m.media_sid]
    if not media_sids:
        return [(prepared.body, None)]
    return [(prepared.body if n == 0 else None, s) for n, s in enumerate(media_sids)]


def _resource(message: dict[str, Any]) -> dict[str, Any]:
    """A Conversations Message as the outbound row records it: handed over means `sent`."""
    return {"sid": message.get("sid"), "account_sid": message.get("account_sid"), "status": "sent"}
