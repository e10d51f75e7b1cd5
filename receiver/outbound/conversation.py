"""Sending into a Conversation (group MMS): the same prepare/fit core, media through MCS.

learn         the conversation's Chat Service and participants (index, else the REST API)
reserve       one outbound row per idempotency key (to_addr = the CH… SID)
opt-out       any member's STOP refuses the whole message: a group message reaches everyone
prepare       the `Preparer` with the MMS rules (every SMS member must be +1), each file
              uploaded to the conversation's own Chat Service instead of being hosted
rate limit    per participant address
submit        POST …/Conversations/{CH}/Messages: the body with the first file, then one
              message per further file (`MediaSid` is a single field), each marked in
              its `Attributes` with the send and its part number
resume        a row left `submitting` (killed, a lost answer, a 5xx half way) is finished
              by `send` with the same key or by `reconcile`: the parts already in the
              conversation are found by their marks, only the missing ones are created

Group texting rules: https://www.twilio.com/docs/conversations/group-texting ;
message creation: https://www.twilio.com/docs/conversations/api/conversation-message-resource ;
upload: https://www.twilio.com/docs/conversations/api/media-resource .
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

from receiver.errors import OutboundError
from receiver.index.conversations import ConversationIndex
from receiver.index.outbound import OutboundIndex, OutboundRecord
from receiver.outbound.prepare import PreparedMedia, PreparedMessage, Preparer
from receiver.outbound.request import (
    OutboundRequest,
    is_conversation_sid,
    mask_number,
    redact,
    validate_request,
)
from receiver.outbound.send import (
    IN_FLIGHT_GRACE,
    OPTED_OUT_ERROR,
    REJECTING_STATUSES,
    Sender,
    SendResult,
)
from receiver.ratelimit import RateLimiter
from receiver.twilio.mcs import McsClient
from receiver.twilio.rest import TwilioRest, TwilioRestError
from receiver.twilio.webhook import RECEIPT_STATUSES, SEND_MARK_KEY, send_mark

if TYPE_CHECKING:
    from receiver.index import MediaIndex

log = logging.getLogger(__name__)


class _TurnsByKey:
    """One lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[int, tuple[threading.Lock, int]] = {}

    @contextmanager
    def holding(self, key: int) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


#: Resumes of one outbound row in this process take turns.
_RESUMING = _TurnsByKey()


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
        *,
        in_flight_grace: float = IN_FLIGHT_GRACE,
        default_author: str | None = None,
    ) -> None:
        self.index = index
        self.outbound_index = outbound_index
        self.conversations = conversations
        self.preparer = preparer
        self.rest = rest
        self.mcs = mcs
        self.limiter = limiter
        self.in_flight_grace = in_flight_grace
        #: The `Author` of a message whose request names none (RECEIVER_CONVERSATION_AUTHOR).
        self.default_author = default_author

    def send(
        self, request: OutboundRequest, *, dry_run: bool = False, wait_in_flight: bool = False
    ) -> SendResult:
        """Send into `request.conversation_sid`; errors as `Sender.send` (`wait_in_flight`:
        wait out the grace of a cut-off earlier attempt instead of raising "in_flight")."""
        validate_request(request)
        sid = str(request.conversation_sid)
        rest = self.rest()  # fails (ConfigError) before anything is recorded
        members = self.members(rest, sid)
        # Group MMS exists only between US/CA (+1) numbers; chat members take any file.
        phones = [a for a in members.addresses if a.startswith("+")]
        mms_ok = all(a.startswith("+1") for a in phones)
        if dry_run:
            plan = self.preparer.prepare(request, host=False, mms_ok=mms_ok)
            return SendResult(None, request.idempotency_key, None, "dry-run", False, plan)
        row, created = self.outbound_index.reserve(
            {
                "idempotency_key": request.idempotency_key,
                "to_addr": sid,
                "from_addr": request.author or self.default_author,
                "body": request.body,
                "media": [{"source": redact(m)} for m in request.media],
                "fallback": request.fallback,
            }
        )
        if not created:
            if row.status == "submitting":
                # Cut off mid-send: finish what is missing, never send a part twice.
                return self._resume(rest, row, wait=wait_in_flight)
            if row.sid:
                return Sender._result(row, duplicate=True)
            self.outbound_index.retry(row.id)
        opted = self.conversations.opted_out_members(sid)
        if opted:
            message = opted_out_message(opted)
            self.outbound_index.finish(
                row.id, "refused", error_code=OPTED_OUT_ERROR, error_message=message
            )
            raise OutboundError(message, "opted_out")
        prepared: PreparedMessage | None = None
        if not created and row.status == "pending" and _uploaded(row):
            # Stopped after its files went to MCS (cut off, or Twilio answered 401/429):
            # those media SIDs are sent, nothing is uploaded again.
            parts = _row_parts(row)
        else:
            prepared = self._prepare(row, request, members.chat_service_sid, mms_ok)
            parts = _parts(prepared)
        for address in members.addresses or (sid,):
            self.limiter.acquire(address, len(parts))
        if not self.outbound_index.claim(row.id):
            current = self.outbound_index.get(row.id) or row
            return Sender._result(current, duplicate=True, prepared=prepared)
        return self._submit(rest, row.id, request, prepared, parts)

    def _prepare(
        self, row: OutboundRecord, request: OutboundRequest, service: str, mms_ok: bool
    ) -> PreparedMessage:
        """The prepare/fit core with each file uploaded to the Chat Service; kept on the row."""

        def upload(item: PreparedMedia, payload: BinaryIO) -> PreparedMedia:
            payload.seek(0)
            media_sid = self.mcs.upload(service, payload.read(), item.content_type)
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
        return prepared

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
        prepared: PreparedMessage | None,
        parts: list[tuple[str | None, str | None]],
    ) -> SendResult:
        sid = str(request.conversation_sid)
        row = self.outbound_index.get(row_id)
        assert row is not None
        created: list[dict[str, Any]] = []
        try:
            for n, (body, media_sid) in enumerate(parts):
                created.append(self._create(rest, row, n, body, media_sid))
        except TwilioRestError as exc:
            if created and exc.status in REJECTING_STATUSES and not exc.maybe_sent:
                # Twilio refuses a later part as it stands: keep what is in, resend nothing.
                self.outbound_index.mark_submitted(row_id, _resource(created[0]))
            elif created or exc.maybe_sent:
                pass  # stays `submitting`: `_resume` finds the parts in and adds the rest
            elif exc.status in REJECTING_STATUSES:
                self.outbound_index.finish(
                    row_id, "rejected", error_code=exc.code, error_message=str(exc)
                )
            else:
                self.outbound_index.release(row_id, error_message=str(exc))
            raise
        row = self.outbound_index.mark_submitted(row_id, _resource(created[0]))
        log.info("sent %s into %s (%d messages)", row.sid, sid, len(created))
        return Sender._result(row, duplicate=False, prepared=prepared)

    def _create(
        self,
        rest: TwilioRest,
        row: OutboundRecord,
        part: int,
        body: str | None,
        media_sid: str | None,
    ) -> dict[str, Any]:
        return rest.create_conversation_message(
            row.to_addr,
            author=row.from_addr,
            body=body,
            media_sid=media_sid,
            attributes=json.dumps({SEND_MARK_KEY: {"send": _send_mark(row), "part": part}}),
        )

    def _resume(self, rest: TwilioRest, row: OutboundRecord, *, wait: bool) -> SendResult:
        """Finish a row left `submitting`: adopt the parts already in the conversation (found
        by the mark in their `Attributes`), create only the missing ones.

        A create cut off a moment ago may still land, so missing parts of a row
        claimed less than `in_flight_grace` seconds ago are only created once that
        time has passed: with `wait` this waits, otherwise OutboundError
        ("in_flight") says when to try again. Resumes of one row in this process
        take turns; across processes the take-over restarts the grace, so another
        process sees the row in flight.
        """
        with _RESUMING.holding(row.id):
            current = self.outbound_index.get(row.id)
            if current is None or current.status != "submitting":
                # A resume that held the turn before this one finished it.
                return Sender._result(current or row, duplicate=True)
            return self._resume_held(rest, current, wait=wait)

    def _resume_held(self, rest: TwilioRest, row: OutboundRecord, *, wait: bool) -> SendResult:
        parts = _row_parts(row)
        found = self._parts_in(rest, row)
        missing = [n for n in range(len(parts)) if n not in found]
        age = (datetime.now(UTC) - row.updated_at).total_seconds()
        if missing and age < self.in_flight_grace:
            if not wait:
                raise OutboundError(
                    f"an earlier attempt to send this message started {age:.0f}s ago and may "
                    f"still reach Twilio; run again in {self.in_flight_grace - age:.0f}s",
                    "in_flight",
                )
            time.sleep(self.in_flight_grace - age)
        if missing:
            if not self.outbound_index.reclaim(row.id, row.updated_at):
                # Another process (a concurrent `send` or `reconcile`) is finishing it.
                raise OutboundError(
                    "another attempt is finishing this message; run again in a minute",
                    "in_flight",
                )
            # Listed again after the take-over: a part created before it is adopted, not sent twice.
            found = self._parts_in(rest, row)
            missing = [n for n in range(len(parts)) if n not in found]
        for n in missing:
            body, media_sid = parts[n]
            found[n] = self._create(rest, row, n, body, media_sid)
        done = self.outbound_index.mark_submitted(row.id, _resource(found[0]))
        log.info(
            "outbound row %s into %s resumed: %d part(s) were in, %d created",
            row.id,
            row.to_addr,
            len(parts) - len(missing),
            len(missing),
        )
        return Sender._result(done, duplicate=not missing)

    def _parts_in(self, rest: TwilioRest, row: OutboundRecord) -> dict[int, dict[str, Any]]:
        """The row's parts already in its conversation, by part number (newest messages
        first, back to a little before the row was made)."""
        mark = _send_mark(row)
        since = row.created_at - timedelta(minutes=5)
        found: dict[int, dict[str, Any]] = {}
        for message in rest.list_conversation_messages(row.to_addr):
            own = send_mark(message.get("attributes"))
            if own is not None and own[0] == mark:
                found.setdefault(own[1], message)
            created = _when(message.get("date_created"))
            if created is not None and created < since:
                break
        return found

    def refresh_receipts(self, since: timedelta) -> int:
        """Record the per-member delivery receipts of the messages sent into conversations in
        the last `since`, from the Receipts resource (receipt webhooks may have been
        missed); returns how many receipts changed."""
        after = datetime.now(UTC) - since
        changed = 0
        for row in self.outbound_index.in_states(["sent"]):
            if not (row.sid and is_conversation_sid(row.to_addr) and row.created_at >= after):
                continue
            try:
                receipts = self.rest().list_message_receipts(row.to_addr, row.sid)
            except TwilioRestError as exc:
                log.warning("cannot read the receipts of %s: %s", row.sid, exc)
                continue
            known = {
                r.sid: r.status for r in self.conversations.receipts([row.sid]).get(row.sid, [])
            }
            for item in receipts:
                status = str(item.get("status") or "").lower()
                sid = str(item.get("sid") or "")
                if not sid.startswith("DY") or status not in RECEIPT_STATUSES:
                    continue
                after_status = self.conversations.save_receipt(
                    {
                        "sid": item["sid"],
                        "message_sid": row.sid,
                        "conversation_sid": row.to_addr,
                        "participant_sid": item.get("participant_sid"),
                        "channel_message_sid": item.get("channel_message_sid"),
                        "status": status,
                        "error_code": item.get("error_code") or None,
                    }
                )
                changed += int(known.get(item["sid"]) != after_status)
        return changed

    def resolve_unknown(self) -> tuple[int, int]:
        """Finish conversation rows left `submitting`: (resolved, still in flight)."""
        resolved = waiting = 0
        for row in self.outbound_index.in_states(["submitting"]):
            if not is_conversation_sid(row.to_addr):
                continue
            try:
                self._resume(self.rest(), row, wait=False)
                resolved += 1
            except OutboundError:
                waiting += 1
        return resolved, waiting


def opted_out_message(addresses: list[str]) -> str:
    """Why nothing can be sent into a conversation some members opted out of."""
    return (
        f"{', '.join(mask_number(a) for a in addresses)} opted out (replied STOP); a group "
        "message reaches every member, so nothing was sent: remove them from the "
        "conversation, or wait until they text START"
    )


def _parts(prepared: PreparedMessage) -> list[tuple[str | None, str | None]]:
    """(Body, MediaSid) of each message to create for a prepared message."""
    return _split(prepared.body, [m.media_sid for m in prepared.media if m.media_sid])


def _split(body: str | None, media_sids: list[str]) -> list[tuple[str | None, str | None]]:
    """The body rides with the first file; each further file is one more message."""
    if not media_sids:
        return [(body, None)]
    return [(body if n == 0 else None, s) for n, s in enumerate(media_sids)]


def _resource(message: dict[str, Any]) -> dict[str, Any]:
    """A Conversations Message as the outbound row records it: handed over means `sent`."""
    return {"sid": message.get("sid"), "account_sid": message.get("account_sid"), "status": "sent"}


def _row_parts(row: OutboundRecord) -> list[tuple[str | None, str | None]]:
    """The parts of a claimed row, from what preparation stored on it."""
    return _split(row.body, [str(m["media_sid"]) for m in row.media if m.get("media_sid")])


def _uploaded(row: OutboundRecord) -> bool:
    """Whether every file of the row was prepared and is in MCS already."""
    return bool(row.media) and all(m.get("media_sid") for m in row.media)


def _send_mark(row: OutboundRecord) -> str:
    """What marks one row's messages (its id and key, hashed: no key in the attributes)."""
    return hashlib.sha256(f"{row.id}:{row.idempotency_key}".encode()).hexdigest()[:24]


def _when(value: Any) -> datetime | None:
    """An ISO 8601 `date_created` (e.g. 2026-12-03T12:00:00Z) as an aware datetime."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
