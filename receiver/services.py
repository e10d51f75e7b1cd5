"""Builds the service objects once from Settings; Flask-free so `worker` and CLI share it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from receiver.inbound.pipeline import Pipeline
from receiver.inbound.remote_delete import delete_remote_copies
from receiver.index import MediaIndex
from receiver.media.fetch import FetchConfig, Fetcher
from receiver.media.policy import inbound_policy
from receiver.metrics import instrument
from receiver.replies import ReplyRenderer
from receiver.settings import Settings
from receiver.storage import open_store
from receiver.storage.base import ObjectStore
from receiver.twilio.signature import SignatureVerifier

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request or a worker needs, built once per process."""

    settings: Settings
    index: MediaIndex
    store: ObjectStore
    pipeline: Pipeline
    verifier: SignatureVerifier
    replies: ReplyRenderer
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        """Stop background work and release connections."""
        self.pipeline.shutdown(wait=False)
        self.index.close()


def build_services(settings: Settings, *, check_storage: bool = True) -> Services:
    """Open the index (upgrading its schema) and the store, and wire the pipeline."""
    index = MediaIndex.open(settings.database_url)
    store = open_store(settings.storage_url)
    if check_storage:
        store.check()
    pipeline = Pipeline(
        index,
        store,
        Fetcher(FetchConfig.inbound(settings)),
        inbound_policy(settings.max_media_bytes, settings.max_message_bytes),
        max_attempts=settings.max_attempts,
        max_message_bytes=settings.max_message_bytes,
        max_media_bytes=settings.max_media_bytes,
        lease_seconds=settings.lease_seconds,
        delete_remote=settings.delete_remote_media,
    )
    services = Services(
        settings=settings,
        index=index,
        store=store,
        pipeline=pipeline,
        verifier=SignatureVerifier(settings.auth_tokens),
        replies=ReplyRenderer(settings.data_dir / "templates"),
    )
    if settings.delete_remote_media:
        services.extras["background_task"] = remote_deletion_task(settings, pipeline)
    instrument(services)
    return services


def remote_deletion_task(settings: Settings, pipeline: Pipeline) -> Callable[[], None]:
    """The periodic step that deletes Twilio's copy of media verified in storage."""
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
