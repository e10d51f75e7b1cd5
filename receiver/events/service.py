"""`Events`: the events capability as the CLI, the API and the workers use it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from receiver.events.delivery import HttpSender, Senders, SqsSender
from receiver.events.dispatcher import DeliveryObserver, Dispatcher
from receiver.events.payloads import MediaSigner, Payloads
from receiver.events.policy import RetryPolicy
from receiver.events.signing import new_secret
from receiver.index import MediaIndex
from receiver.index.events import Endpoint, events_column
from receiver.settings import Settings
from receiver.storage.base import ObjectStore

#: `rotate-secret` signs with the old secret too for this long.
ROTATION_OVERLAP = timedelta(hours=24)
#: The id of the endpoint declared by RECEIVER_EVENT_URL.
ENV_ENDPOINT = "ep_env"


class Events:
    """Endpoints, tests, replays, and this process's dispatcher."""

    def __init__(
        self,
        settings: Settings,
        index: MediaIndex,
        store: ObjectStore,
        sign_media: MediaSigner,
        *,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self.index = index
        self.senders = Senders(HttpSender(settings.event_hosts), SqsSender())
        self.payloads = Payloads(
            store, sign_media, public_url=settings.public_url, link_ttl=settings.event_link_ttl
        )
        self.policy = RetryPolicy(settings.event_retry_schedule, settings.event_disable_after)
        self.dispatcher = Dispatcher(
            index,
            self.payloads,
            self.senders,
            self.policy,
            lease_seconds=settings.lease_seconds,
            observer=observer,
        )
        if settings.event_url:
            index.put_env_endpoint(ENV_ENDPOINT, settings.event_url, settings.event_secret)

    def add_endpoint(
        self, url: str, types: Iterable[str] | None = None, description: str = "", *, source: str
    ) -> tuple[Endpoint, str]:
        """Check and create an endpoint; it and its new `whsec_` secret.

        ValueError names what is wrong: an unknown event type, a URL that
        is not http(s) or sqs, or one that resolves to a private address.
        """
        chosen = list(types or ())
        events_column(chosen)
        self.senders.check(url)
        secret = new_secret()
        endpoint = self.index.add_endpoint(
            url, types=chosen, description=description, secret=secret, source=source
        )
        return endpoint, secret

    def rotate_secret(self, endpoint_id: str) -> str | None:
        """A new secret for the endpoint (the old one also signs for 24 h); None: no endpoint."""
        secret = new_secret()
        if not self.index.rotate_secret(endpoint_id, secret, overlap=ROTATION_OVERLAP):
            return None
        return secret

    def test(self, endpoint_id: str) -> str | None:
        """Send an `endpoint.test` event to one endpoint; its id (None: no endpoint)."""
        return self.index.test_endpoint(endpoint_id, {"endpoint_id": endpoint_id})

    def replay(
        self, endpoint_id: str, *, event_id: str | None = None, since: datetime | None = None
    ) -> int:
        """Deliver one event, or every subscribed event since a moment, again."""
        return self.index.replay(endpoint_id, event_id=event_id, since=since)

    def close(self) -> None:
        """Stop the dispatcher and close connections."""
        self.dispatcher.stop()
        self.senders.close()
