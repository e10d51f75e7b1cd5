"""Sending one message: opt-outs, the rate limit, and the idempotent create.

reserve       one outbound row per idempotency key; a key already sent is never sent again
opt-out       the recipient's STOP (inbound keyword or an earlier 21610) refuses the send
prepare       the `Preparer` checks, fits, hosts and pre-flights every attachment
rate limit    per-sender token bucket
submit        claim the row (pending -> submitting), create the message, record the sid

Nothing is sent until every attachment of a message passed pre-flight; a row left
``submitting`` by a crash is matched against Twilio's message list before any resend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from receiver.errors import ConfigError, OutboundError
from receiver.index.outbound import OutboundIndex, OutboundRecord
from receiver.outbound.prepare import PreparedMessage, Preparer
from receiver.outbound.request import (
    OutboundRequest,
    is_conversation_sid,
    mask_number,
    redact,
    validate_request,
)
from receiver.ratelimit import RateLimiter
from receiver.twilio.rest import TwilioRest, TwilioRestError

if TYPE_CHECKING:
    from receiver.index import MediaIndex
    from receiver.settings import Settings

log = logging.getLogger(__name__)

#: Twilio errors after which the same request must not be repeated unchanged.
REJECTING_STATUSES = frozenset({400, 404, 409, 422})
#: Twilio's error for a recipient who replied STOP to this sender: it refuses the message.
#: https://www.twilio.com/docs/api/errors/21610
OPTED_OUT_ERROR = 21610
#: How long an interrupted create may still land in Twilio's records: the REST
#: client's read timeout plus a margin. Rows claimed more recently are not resent.
IN_FLIGHT_GRACE = 35.0


@dataclass(frozen=True)
class SendResult:
    """What `send` did: the outbound row, Twilio's sid and status, and whether it was new."""

    row_id: int | None
    idempotency_key: str | None
    sid: str | None
    status: str
    #: The key was already sent (or is being sent): nothing new went to Twilio.
    duplicate: bool
    prepared: PreparedMessage | None = None
    error_code: int | None = None
    error_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's answer."""
        out: dict[str, Any] = {
            "id": self.row_id,
            "sid": self.sid,
            "status": self.status,
            "idempotency_key": self.idempotency_key,
            "duplicate": self.duplicate,
            "error_code": self.error_code,
            "error_message": self.error_message,
        }
        if self.prepared is not None:
            out.update(
                mode=self.prepared.mode,
                body=self.prepared.body,
                media=[m.to_json() for m in self.prepared.media],
                notes=list(self.prepared.notes),
            )
        return out


class Sender:
    """Sends one message at a time under its idempotency key, through `preparer` and `rest`."""

    def __init__(
        self,
        settings: Settings,
        index: MediaIndex,
        outbound_index: OutboundIndex,
        preparer: Preparer,
        rest: Callable[[], TwilioRest],
        *,
        limiter: RateLimiter | None = None,
        in_flight_grace: float = IN_FLIGHT_GRACE,
    ) -> None:
        self.settings = settings
        self.index = index
        self.outbound_index = outbound_index
        self.preparer = preparer
        self.rest = rest
        self.limiter = limiter or RateLimiter()
        self.in_flight_grace = in_flight_grace

    @property
    def status_callback(self) -> str | None:
        """Where Twilio should post delivery status: RECEIVER_PUBLIC_URL + /twilio/status."""
        return f"{self.settings.public_url}/twilio/status" if self.settings.public_url else None

    def send(
        self,
        request: OutboundRequest,
        *,
        dry_run: bool = False,
        cache: dict[Any, PreparedMessage] | None = None,
        wait_in_flight: bool = False,
    ) -> SendResult:
        """Send one message (idempotent on `request.idempotency_key`).

        Raises OutboundError when it cannot be sent (the reason names the fix),
        TwilioApiError when Twilio refused it, ConfigError when credentials or
        the public URL are missing. A key that was already sent returns its
        row with `duplicate` set, and nothing goes to Twilio.
        """
        validate_request(request)
        if dry_run:
            prepared = self.preparer.prepare(request, host=False)
            return SendResult(None, request.idempotency_key, None, "dry-run", False, prepared)
        rest = self.rest()  # fails (ConfigError) before anything is recorded
        row, created = self.outbound_index.reserve(
            {
                "idempotency_key": request.idempotency_key,
                "to_addr": request.to,
                "from_addr": request.from_,
                "messaging_service_sid": request.messaging_service_sid,
                "body": request.body,
                "media": [{"source": redact(m)} for m in request.media],
                "fallback": request.fallback,
            }
        )
        if not created:
            settled = self._settle_existing(row, wait=wait_in_flight)
            if settled is not None:
                return settled
        row_id = row.id
        if self.index.is_opted_out(
            request.to, [s for s in (request.from_, request.messaging_service_sid) if s]
        ):
            message = (
                f"{request.to} opted out (replied STOP) of messages from "
                f"{request.sender}; they must text START before you can message them"
            )
            self.outbound_index.finish(
                row_id, "refused", error_code=OPTED_OUT_ERROR, error_message=message
            )
            raise OutboundError(message, "opted_out")
        try:
            prepared = self.preparer.prepare_reusing(request, cache)
        except (OutboundError, ConfigError) as exc:
            self.outbound_index.finish(row_id, "refused", error_message=str(exc))
            raise
        self.outbound_index.update_prepared(
            row_id,
            body=prepared.body,
            media=[m.to_json() for m in prepared.media],
            fallback="link" if prepared.mode == "link" else request.fallback,
        )
        self.limiter.acquire(request.sender, prepared.segments)
        if not self.outbound_index.claim(row_id):
            current = self.outbound_index.get(row_id) or row
            return self._result(current, duplicate=True, prepared=prepared)
        return self._submit(rest, row_id, request, prepared)

    def _submit(
        self, rest: TwilioRest, row_id: int, request: OutboundRequest, prepared: PreparedMessage
    ) -> SendResult:
        try:
            message = rest.create_message(
                to=request.to,
                from_=request.from_,
                messaging_service_sid=request.messaging_service_sid,
                body=prepared.body or None,
                media_urls=prepared.media_urls,
                status_callback=self.status_callback,
                validity_period=request.validity_period,
            )
        except TwilioRestError as exc:
            self._after_error(row_id, request, exc)
            raise
        except Exception:
            # Unknown outcome: the row stays `submitting` and is resolved before any resend.
            log.exception("sending outbound row %s failed unexpectedly", row_id)
            raise
        row = self.outbound_index.mark_submitted(row_id, message)
        log.info(
            "sent %s to %s (%s, %d media)",
            row.sid,
            mask_number(request.to),
            prepared.mode,
            len(prepared.media_urls),
        )
        return self._result(row, duplicate=False, prepared=prepared)

    def _after_error(self, row_id: int, request: OutboundRequest, exc: TwilioRestError) -> None:
        """Record what a failed create means for the row (and the opt-out list)."""
        if exc.maybe_sent:
            return  # unknown outcome: stays `submitting`, resolved before any resend
        if exc.code == OPTED_OUT_ERROR:
            self.index.record_refusal(
                request.to, request.messaging_service_sid or request.from_ or "*"
            )
        if exc.status in REJECTING_STATUSES:
            self.outbound_index.finish(
                row_id, "rejected", error_code=exc.code, error_message=str(exc)
            )
        else:
            # 401/403, throttling or server errors after retries: nothing was created.
            self.outbound_index.release(row_id, error_message=str(exc))

    def _settle_existing(self, row: OutboundRecord, *, wait: bool) -> SendResult | None:
        """For a known key: the earlier result, or None when it should be (re)tried."""
        status = row.status
        if row.sid:
            return self._result(row, duplicate=True)
        if status == "submitting":
            resolved = self._resolve(row, wait=wait)
            if resolved is not None:
                return self._result(resolved, duplicate=True)
            return None
        if status in ("refused", "rejected"):
            # Nothing was created on Twilio: trying again cannot send twice.
            self.outbound_index.retry(row.id)
        return None

    def _resolve(self, row: OutboundRecord, *, wait: bool) -> OutboundRecord | None:
        """A row left `submitting` by an interruption: adopt Twilio's message if it exists,
        else free the row for a new attempt.

        A request cut off a moment ago may still be on its way into Twilio's
        records, so a row claimed less than `in_flight_grace` seconds ago is
        only freed once that time has passed: with `wait` this waits, otherwise
        it raises OutboundError(reason "in_flight") saying when to try again.
        """
        found = self._find_sent(row)
        if found is not None:
            return found
        age = (datetime.now(UTC) - row.updated_at).total_seconds()
        remaining = self.in_flight_grace - age
        if remaining > 0:
            if not wait:
                raise OutboundError(
                    f"an earlier attempt to send this message started {age:.0f}s ago and may "
                    f"still reach Twilio; run again in {remaining:.0f}s",
                    "in_flight",
                )
            time.sleep(remaining)
            found = self._find_sent(row)
            if found is not None:
                return found
        self.outbound_index.release(row.id)
        return None

    def _find_sent(self, row: OutboundRecord) -> OutboundRecord | None:
        """Twilio's record of a row's message (same recipient, sender and body), adopted."""
        since = row.created_at - timedelta(minutes=5)
        for message in self.rest().list_messages(
            to=row.to_addr, from_=row.from_addr, date_sent_after=since
        ):
            if (
                message.get("direction", "").startswith("outbound")
                and (message.get("body") or "") == (row.body or "")
                and self.outbound_index.by_sid(message["sid"]) is None
            ):
                log.info(
                    "outbound row %s was sent before an interruption: adopting %s",
                    row.id,
                    message["sid"],
                )
                return self.outbound_index.adopt(row.id, message)
        return None

    def resolve_unknown(self) -> tuple[int, int]:
        """Resolve rows left `submitting` by an interruption: (resolved, still in flight)."""
        resolved = waiting = 0
        for row in self.outbound_index.in_states(["submitting"]):
            if is_conversation_sid(row.to_addr):
                continue  # resolved by ConversationSender, in its conversation
            try:
                self._resolve(row, wait=False)
                resolved += 1
            except OutboundError:
                waiting += 1
        return resolved, waiting

    @staticmethod
    def _result(
        row: OutboundRecord, *, duplicate: bool, prepared: PreparedMessage | None = None
    ) -> SendResult:
        return SendResult(
            row_id=row.id,
            idempotency_key=row.idempotency_key,
            sid=row.sid,
            status=row.status,
            duplicate=duplicate,
            prepared=prepared,
            error_code=row.error_code,
            error_message=row.error_message,
        )
