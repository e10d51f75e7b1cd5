"""Delivery tracking: status callbacks, delivery figures, and refreshing missed statuses.

Every verified callback is stored; a message's status only moves forward
(`receiver.index.outbound`). A 21610 error means the recipient replied STOP,
so it also records an opt-out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from receiver.errors import TwilioApiError
from receiver.index.outbound import OutboundIndex
from receiver.outbound.request import is_conversation_sid
from receiver.outbound.send import OPTED_OUT_ERROR
from receiver.twilio.rest import TwilioRest
from receiver.twilio.webhook import StatusCallback, parse_status

if TYPE_CHECKING:
    from receiver.index import MediaIndex

log = logging.getLogger(__name__)


class StatusTracker:
    """Applies status callbacks and reports where outbound messages stand."""

    def __init__(
        self, index: MediaIndex, outbound_index: OutboundIndex, rest: Callable[[], TwilioRest]
    ) -> None:
        self.index = index
        self.outbound_index = outbound_index
        self.rest = rest

    def handle_status(self, params: Sequence[tuple[str, str]]) -> str | None:
        """Store a verified status callback; the message's status only moves forward.

        Returns the message's status afterwards (None for a MessageSid not sent
        from here). Raises WebhookError for a malformed callback (the view answers 400).
        """
        return self.record(parse_status(params))

    def record(self, event: StatusCallback) -> str | None:
        """Store a parsed status event (a callback or an Event Streams status event)."""
        status = self.outbound_index.record_status(event)
        if event.error_code == OPTED_OUT_ERROR and event.to is not None:
            row = self.outbound_index.by_sid(event.message_sid)
            sender = (row.messaging_service_sid if row else None) or (
                event.from_.address if event.from_ else "*"
            )
            self.index.record_refusal(event.to.address, sender, event.message_sid)
        return status

    def stats(self, *, days: int | None = None) -> dict[str, Any]:
        """Delivery figures for `GET /api/stats`."""
        since = datetime.now(UTC) - timedelta(days=days) if days else None
        return {"outbound": self.outbound_index.stats(since=since)}

    def message(self, sid_or_id: str) -> dict[str, Any] | None:
        """One outbound message as a dict with its status events (by MessageSid or row id)."""
        row = (
            self.outbound_index.get(int(sid_or_id))
            if sid_or_id.isdigit()
            else self.outbound_index.by_sid(sid_or_id)
        )
        if row is None:
            return None
        return {**row.as_dict(), "events": self.outbound_index.events(row.sid) if row.sid else []}

    def refresh_statuses(self, since: timedelta) -> int:
        """Bring outbound messages still in flight up to Twilio's record (their callbacks
        may have been missed too); returns how many moved."""
        after = datetime.now(UTC) - since
        moved = 0
        rows = [
            (r.sid, r.status)
            for r in self.outbound_index.in_states(
                ["accepted", "scheduled", "queued", "sending", "sent"]
            )
            # Conversation messages (IM…) are not Messaging resources: receipts track them.
            if r.sid and r.created_at >= after and not is_conversation_sid(r.to_addr)
        ]
        for sid, before in rows:
            try:
                message = self.rest().fetch_message(sid)
            except TwilioApiError as exc:
                log.warning("cannot refresh %s: %s", sid, exc)
                continue
            status = str(message.get("status") or "")
            if status != before:
                params = [
                    ("MessageSid", sid),
                    ("MessageStatus", status),
                    ("AccountSid", str(message.get("account_sid") or "")),
                ]
                if message.get("error_code"):
                    params.append(("ErrorCode", str(message["error_code"])))
                after_status = self.handle_status([p for p in params if p[1]])
                moved += int(after_status != before)
            self._record_price(sid, message)
        for row in self.outbound_index.unpriced_final(after):
            if row.sid is None or is_conversation_sid(row.to_addr):
                continue
            try:
                self._record_price(row.sid, self.rest().fetch_message(row.sid))
            except TwilioApiError as exc:
                log.warning("cannot fetch the price of %s: %s", row.sid, exc)
        return moved

    def _record_price(self, sid: str, message: dict[str, Any]) -> None:
        # Twilio fills `price` (a decimal string, negative when charged) and `price_unit`
        # once the message is final; until then `price` is null:
        # https://www.twilio.com/docs/messaging/api/message-resource#message-properties
        raw = message.get("price")
        if raw in (None, ""):
            return
        try:
            price = float(str(raw))
        except ValueError:
            log.warning("ignoring the unreadable price %r of %s", raw, sid)
            return
        unit = message.get("price_unit")
        self.outbound_index.record_price(sid, price, str(unit) if unit else None)
