"""Reconciliation: inbound messages Twilio has but the index lacks (webhooks missed while down).

Each missing message is read from Twilio's REST API, turned into the same
`InboundMessage` a webhook produces (`inbound_from_rest`), and goes through
the pipeline's own ingest and media processing. Running it twice ingests
nothing the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from receiver.errors import ReceiverError, WebhookError
from receiver.twilio.rest import TwilioRest
from receiver.twilio.webhook import inbound_from_rest

if TYPE_CHECKING:
    from receiver.inbound.pipeline import Pipeline
    from receiver.index import MediaIndex

log = logging.getLogger(__name__)


@dataclass
class ReconcileSummary:
    """What a reconcile run found and did."""

    listed: int = 0
    known: int = 0
    ingested: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)


class Reconciler:
    """Lists received messages on Twilio and ingests those the index lacks."""

    def __init__(
        self, index: MediaIndex, pipeline: Pipeline, rest: Callable[[], TwilioRest]
    ) -> None:
        self.index = index
        self.pipeline = pipeline
        self.rest = rest

    def inbound_since(
        self, since: timedelta, *, include_text: bool = False
    ) -> list[dict[str, Any]]:
        """Inbound messages Twilio received in the last `since` (with media, unless
        `include_text`), newest first, from its REST API."""
        after = datetime.now(UTC) - since
        return [
            m
            for m in self.rest().list_messages(date_sent_after=after)
            if m.get("direction") == "inbound"
            and (include_text or int(m.get("num_media") or 0) > 0)
        ]

    def reconcile(
        self, messages: Iterable[dict[str, Any]], *, deadline: float = 60.0
    ) -> ReconcileSummary:
        """Ingest the listed messages the index lacks, as if their webhook had arrived."""
        summary = ReconcileSummary()
        for message in messages:
            summary.listed += 1
            try:
                if self.index.get_message(str(message["sid"])) is not None:
                    summary.known += 1
                elif self._ingest(message, deadline):
                    summary.ingested += 1
                else:
                    summary.known += 1
            except (ReceiverError, WebhookError) as exc:
                summary.failed += 1
                summary.problems.append(f"{message.get('sid')}: {exc}")
        return summary

    def reconcile_sid(self, sid: str, *, deadline: float = 0.0) -> bool:
        """Fetch one message the index lacks from the REST API and ingest it; False when known.

        For an Event Streams `inbound-message.received` whose webhook never came.
        """
        if self.index.get_message(sid) is not None:
            return False
        return self._ingest(self.rest().fetch_message(sid), deadline)

    def _ingest(self, message: dict[str, Any], deadline: float) -> bool:
        rest = self.rest()
        sid = str(message["sid"])
        media = rest.list_media(sid) if int(message.get("num_media") or 0) else []
        msg = inbound_from_rest(message, media, rest.media_url)
        result = self.pipeline.ingest(msg)
        # The same two steps as the webhook: a created message's items are leased to us.
        self.pipeline.process_message(sid, deadline=deadline, ingested=result)
        log.info("reconciled %s from Twilio: %s", sid, "ingested" if result.created else "known")
        return result.created
