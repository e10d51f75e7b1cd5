"""Builds the service objects once from Settings; Flask-free so `worker` and CLI share it.

`build_services` is the one place where collaborators are constructed and
handed to each other; everything else receives them (see docs/design.md,
"Module map").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from receiver.events.service import Events
from receiver.inbound.conversations import Conversations, service_lookup
from receiver.inbound.pipeline import Pipeline
from receiver.inbound.reconcile import Reconciler
from receiver.inbound.remote_delete import delete_remote_copies
from receiver.inbound.streams import EventStream
from receiver.index import MediaIndex
from receiver.index.conversations import ConversationIndex
from receiver.index.livefeed import LiveFeed
from receiver.index.outbound import OutboundIndex
from receiver.index.replies import ReplyIndex
from receiver.index.sessions import SessionStore
from receiver.index.streams import StreamIndex
from receiver.index.throttle import AuthThrottle
from receiver.media.fetch import FetchConfig, Fetcher
from receiver.media.ocr import TextReader
from receiver.media.policy import inbound_policy
from receiver.media.scan import scanner_for
from receiver.metrics import Metrics
from receiver.outbound import MediaLinks, Outbound
from receiver.outbound.inbox_reply import InboxReplies
from receiver.replies import ReplyRenderer
from receiver.settings import Settings
from receiver.storage import open_store
from receiver.storage.base import ObjectStore
from receiver.streamhub import StreamHub
from receiver.twilio.client import TwilioClient
from receiver.twilio.mcs import McsClient
from receiver.twilio.signature import SignatureVerifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """Everything a request or a worker needs, built once per process."""

    settings: Settings
    #: The metadata database: messages, media work queue, opt-outs.
    index: MediaIndex
    #: Outbound messages and their status events (same database as `index`).
    outbound_index: OutboundIndex
    #: The bytes: originals, derivatives, prepared outbound files.
    store: ObjectStore
    #: Downloads inbound MediaUrls (allowlisted hosts, Twilio credentials).
    fetcher: Fetcher
    pipeline: Pipeline
    verifier: SignatureVerifier
    replies: ReplyRenderer
    #: Twilio's REST API, built on first use (sending works only with credentials).
    twilio: TwilioClient
    #: Signs and checks the /m/<token> links of prepared outbound media.
    links: MediaLinks
    outbound: Outbound
    metrics: Metrics
    #: Browser sessions held in the index, so logout and revocation reach every worker.
    sessions: SessionStore
    #: Login and API-token failures counted in the index, per address and per account.
    throttle: AuthThrottle
    #: Conversations webhooks: threads, participants, messages (same database as `index`).
    conversations: Conversations
    #: The Event Streams sink: CloudEvents claimed once by id, routed to the same stores.
    streams: EventStream
    #: Event endpoints, replays and this process's event dispatcher.
    events: Events
    #: Replies from the inbox's reply box and its API, through `outbound`.
    inbox_replies: InboxReplies
    #: This process's open live-update streams (GET /api/stream) and the thread feeding them.
    live: StreamHub
    #: The periodic step that deletes Twilio's copy of stored media, when enabled.
    remote_deletion: Callable[[], None] | None = None

    def close(self) -> None:
        """Stop background work and release connections."""
        self.events.close()
        self.live.close()
        self.pipeline.shutdown(wait=False)
        self.outbound.close()
        self.twilio.close()
        self.index.close()


def build_services(settings: Settings, *, check_storage: bool = True) -> Services:
    """Open the index (upgrading its schema) and the store, and wire every collaborator."""
    index = MediaIndex.open(settings.database_url)
    store = open_store(settings.storage_url)
    if check_storage:
        store.check()
    metrics = Metrics()
    fetcher = Fetcher(FetchConfig.inbound(settings))
    pipeline = Pipeline(
        index,
        store,
        fetcher,
        inbound_policy(settings.max_media_bytes, settings.max_message_bytes),
        max_attempts=settings.max_attempts,
        max_message_bytes=settings.max_message_bytes,
        max_media_bytes=settings.max_media_bytes,
        lease_seconds=settings.lease_seconds,
        delete_remote=settings.delete_remote_media,
        observer=metrics.observe_item,
        scanner=scanner_for(settings),
        mcs=McsClient(settings.mcs_base, settings.rest_credentials),
        reader=text_reader(settings),
    )
    # Outbound rows share the index's SQLite writer lock (`begin`).
    outbound_index = OutboundIndex(
        index.engine, begin=index.begin, notify_events=index.notify_events
    )
    twilio = TwilioClient(settings)
    links = MediaLinks(settings.secret_key)
    outbound = Outbound.build(
        settings, index, store, outbound_index=outbound_index, links=links, rest=twilio
    )
    conversations = Conversations(
        pipeline,
        ConversationIndex(index.engine, begin=index.begin),
        mcs_base=settings.mcs_base,
        lookup=service_lookup(twilio),
    )
    return Services(
        settings=settings,
        index=index,
        outbound_index=outbound_index,
        store=store,
        fetcher=fetcher,
        pipeline=pipeline,
        verifier=SignatureVerifier(settings.auth_tokens),
        replies=ReplyRenderer(settings.data_dir / "templates"),
        twilio=twilio,
        links=links,
        outbound=outbound,
        metrics=metrics,
        sessions=SessionStore(index),
        throttle=AuthThrottle(index),
        conversations=conversations,
        streams=EventStream(
            StreamIndex(index.engine, begin=index.begin),
            outbound.status,
            conversations,
            Reconciler(index, pipeline, twilio),
        ),
        events=Events(settings, index, store, links.sign_media, observer=metrics.observe_delivery),
        inbox_replies=InboxReplies(
            settings,
            index,
            ReplyIndex(index.engine, begin=index.begin),
            store,
            outbound,
            twilio,
            conversations.index,
        ),
        live=StreamHub(
            LiveFeed(index.engine, begin=index.begin),
            max_streams=settings.stream_max,
            observer=metrics.observe_streams,
        ),
        remote_deletion=(
            remote_deletion_task(settings, pipeline) if settings.delete_remote_media else None
        ),
    )


def text_reader(settings: Settings) -> TextReader | None:
    """The OCR reader of RECEIVER_OCR's languages, or None when OCR is off."""
    if not settings.ocr_languages:
        return None
    return TextReader(settings.ocr_languages, timeout=settings.ocr_timeout)


def remote_deletion_task(settings: Settings, pipeline: Pipeline) -> Callable[[], None]:
    """The periodic step that deletes Twilio's copy of media verified in storage.

    It has its own REST client: it runs on the sweeper thread, apart from requests.
    """
    from receiver.twilio.rest import TwilioRest

    credentials = settings.rest_credentials
    assert credentials is not None  # Settings refuses the flag without credentials
    rest = TwilioRest(settings.account_sid, credentials, api_base=settings.api_base)

    def deleter(account_sid: str, message_sid: str, media_sid: str) -> None:
        if account_sid != settings.account_sid:
            raise ValueError(f"media of account {account_sid} is not this service's account")
        rest.delete_media(message_sid, media_sid)

    def task() -> None:
        delete_remote_copies(pipeline.index, pipeline.store, deleter)

    return task
