"""`Outbound`: the one entry point the CLI and the API use, over the collaborators wired.

Each collaborator has one job and gets what it needs through ``__init__``:
`Preparer` (fetch, inspect, fit) -> `Hosting` (store, sign, pre-flight) ->
`Sender` (opt-outs, rate limit, idempotent create) <- `BulkSender` (CSV
campaigns); `StatusTracker` applies callbacks and reports figures.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from receiver.errors import OutboundError
from receiver.index.conversations import ConversationIndex
from receiver.index.outbound import OutboundIndex
from receiver.media.fetch import FetchConfig, Fetcher
from receiver.outbound.bulk import BulkSender
from receiver.outbound.conversation import ConversationSender
from receiver.outbound.hosting import Hosting, MediaLinks
from receiver.outbound.prepare import Preparer
from receiver.outbound.request import OutboundRequest
from receiver.outbound.send import IN_FLIGHT_GRACE, Sender, SendResult
from receiver.outbound.status import StatusTracker
from receiver.ratelimit import RateLimiter
from receiver.twilio.client import TwilioClient
from receiver.twilio.mcs import McsClient

if TYPE_CHECKING:
    from receiver.index import MediaIndex
    from receiver.settings import Settings
    from receiver.storage.base import ObjectStore


def user_media_fetcher(settings: Settings) -> Fetcher:
    """The fetcher for media URLs a sender gives: any public host, never Twilio credentials.

    RECEIVER_MEDIA_HOSTS entries with a port may be private (local media hosts, tests).
    """
    return Fetcher(FetchConfig.outbound(settings))


class Outbound:
    """The outbound workflow: prepare, host, send (one or many) and track."""

    def __init__(
        self,
        preparer: Preparer,
        sender: Sender,
        bulk: BulkSender,
        status: StatusTracker,
        conversation: ConversationSender | None = None,
    ) -> None:
        self.preparer = preparer
        self.hosting: Hosting = preparer.hosting
        self.sender = sender
        self.bulk = bulk
        self.status = status
        self.conversation = conversation
        # The steps the CLI and the API call, each done by the collaborator that owns it.
        self.prepare = preparer.prepare
        self.send_bulk = bulk.send_bulk
        self.handle_status = status.handle_status
        self.stats = status.stats
        self.message = status.message

    def resolve_unknown(self) -> tuple[int, int]:
        """Resolve sends left `submitting` by an interruption: (resolved, still in flight)."""
        resolved, waiting = self.sender.resolve_unknown()
        if self.conversation is not None:
            more, later = self.conversation.resolve_unknown()
            resolved, waiting = resolved + more, waiting + later
        return resolved, waiting

    def refresh_statuses(self, since: timedelta) -> int:
        """Bring statuses (and conversation delivery receipts) of the window up to Twilio's
        record; returns how many moved."""
        moved = self.status.refresh_statuses(since)
        if self.conversation is not None:
            moved += self.conversation.refresh_receipts(since)
        return moved

    def send(self, request: OutboundRequest, **options: Any) -> SendResult:
        """Send one message: to a number (`Sender`) or into a conversation."""
        if request.conversation_sid is None:
            return self.sender.send(request, **options)
        if self.conversation is None:
            raise OutboundError("this workflow cannot send into conversations", "not_configured")
        return self.conversation.send(request, dry_run=bool(options.get("dry_run")))

    @classmethod
    def build(
        cls,
        settings: Settings,
        index: MediaIndex,
        store: ObjectStore,
        *,
        outbound_index: OutboundIndex | None = None,
        links: MediaLinks | None = None,
        rest: TwilioClient | None = None,
        limiter: RateLimiter | None = None,
        fetcher: Fetcher | None = None,
        in_flight_grace: float = IN_FLIGHT_GRACE,
        conversations: ConversationIndex | None = None,
        mcs: McsClient | None = None,
    ) -> Outbound:
        """Wire the collaborators over one index, store and Twilio client."""
        outbound_index = outbound_index or OutboundIndex(
            index.engine, begin=index.begin, notify_events=index.notify_events
        )
        rest = rest or TwilioClient(settings)
        hosting = Hosting(settings, store, links or MediaLinks(settings.secret_key))
        preparer = Preparer(settings, fetcher or user_media_fetcher(settings), hosting)
        sender = Sender(
            settings,
            index,
            outbound_index,
            preparer,
            rest,
            limiter=limiter,
            in_flight_grace=in_flight_grace,
        )
        conversation = ConversationSender(
            index,
            outbound_index,
            conversations or ConversationIndex(index.engine, begin=index.begin),
            preparer,
            rest,
            mcs or McsClient(settings.mcs_base, settings.rest_credentials),
            sender.limiter,
            in_flight_grace=in_flight_grace,
            default_author=settings.conversation_author or None,
        )
        status = StatusTracker(index, outbound_index, rest)
        return cls(preparer, sender, BulkSender(sender, conversation), status, conversation)

    def close(self) -> None:
        """Release HTTP sessions (the shared Twilio client is closed by its owner)."""
        self.preparer.fetcher.close()
        self.hosting.close()
        if self.conversation is not None:
            self.conversation.mcs.close()
