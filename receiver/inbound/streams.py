"""Event Streams workflow: CloudEvents -> the same stores as the webhooks.

Each event is claimed once by its `id` (delivery is at least once, for up to
4 hours: https://www.twilio.com/docs/events/event-delivery-and-duplication),
then routed: Messaging status events into the monotonic outbound status
store `/twilio/status` uses, Conversations events into the Conversations
path (idempotent on the message SID, so webhook and stream store a message
once in either order), a received message the index lacks through the
REST API (the reconcile path). Other types are kept for inspection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from receiver.errors import ConfigError, WebhookError
from receiver.inbound.conversations import Conversations
from receiver.inbound.reconcile import Reconciler
from receiver.index.streams import StreamIndex
from receiver.outbound.status import StatusTracker
from receiver.twilio.webhook import (
    STREAM_CONVERSATION_EVENTS,
    STREAM_INBOUND,
    STREAM_STATUSES,
    CloudEvent,
    conversation_from_stream,
    inbound_sid_from_stream,
    status_from_stream,
)

log = logging.getLogger(__name__)

#: Sent by `POST /v1/Sinks/{DG}/Test`; its `data.test_id` validates the sink
#: (https://www.twilio.com/docs/events/event-streams/sink-resource).
SINK_TEST_EVENT = "com.twilio.eventstreams.test-event"


@dataclass(frozen=True)
class StreamResult:
    """What one delivery did (the sink's JSON answer)."""

    received: int
    duplicates: int
    applied: int
    kept: int
    errors: int


class EventStream:
    """Routes claimed CloudEvents to the status store and the Conversations path."""

    def __init__(
        self,
        index: StreamIndex,
        statuses: StatusTracker,
        conversations: Conversations,
        reconciler: Reconciler,
    ) -> None:
        self.index = index
        self.statuses = statuses
        self.conversations = conversations
        self.reconciler = reconciler

    def handle(self, events: Sequence[CloudEvent]) -> StreamResult:
        """Apply each new event once; a failure that a redelivery may cure is re-raised."""
        counts = {"duplicate": 0, "applied": 0, "kept": 0, "error": 0}
        for event in events:
            if not self.index.claim(event):
                counts["duplicate"] += 1
                continue
            try:
                outcome, detail = self._route(event)
            except WebhookError as exc:
                # The event itself is malformed: a redelivery would be too. Kept with the reason.
                outcome, detail = "error", str(exc)
                log.warning("event %s (%s) not applied: %s", event.id, event.type, exc)
            except Exception:
                # The index or the store failed: forget the claim so Twilio's retry applies it.
                self.index.release(event.id)
                raise
            self.index.finish(event.id, outcome, detail)
            counts[outcome] += 1
        return StreamResult(
            received=len(events),
            duplicates=counts["duplicate"],
            applied=counts["applied"],
            kept=counts["kept"],
            errors=counts["error"],
        )

    def _route(self, event: CloudEvent) -> tuple[str, str | None]:
        if event.type in STREAM_STATUSES:
            status = self.statuses.record(status_from_stream(event))
            return "applied", f"status now {status}" if status else "no outbound row yet"
        if event.type in STREAM_CONVERSATION_EVENTS:
            outcome = self.conversations.handle(conversation_from_stream(event))
            return "applied", outcome.result
        if event.type == STREAM_INBOUND:
            # A missed messaging webhook is filled in through the REST API (the
            # reconcile path); media is fetched in the background (deadline 0).
            sid = inbound_sid_from_stream(event)
            try:
                created = self.reconciler.reconcile_sid(sid)
            except ConfigError as exc:
                return "kept", f"not reconciled: {exc}"
            return "applied", "reconciled" if created else "known"
        if event.type == SINK_TEST_EVENT:
            # Validating a new sink needs this value posted back to Twilio.
            log.warning(
                "Event Streams sink test event received: test_id=%s", event.data.get("test_id")
            )
        return "kept", None
