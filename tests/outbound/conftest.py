"""Fixtures for the outbound suite: the fake Twilio API, a media server, and the service
running on a real loopback HTTP server (Twilio's callbacks and media fetches reach it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from receiver.outbound import Outbound, OutboundRequest
from receiver.services import Services
from tests.conftest import ACCOUNT_SID, TOKEN, base_env
from tests.support.fake_mcs import FakeMcs
from tests.support.fake_twilio import FakeTwilio
from tests.support.loopback import serve_in_thread
from tests.support.mediaserver import MediaServer
from tests.support.services import free_port

API_KEY = "SK" + "2" * 32
API_SECRET = "test-api-secret-0123456789"
SENDER = "+15017122661"
TOLL_FREE = "+18005550123"
RECIPIENT = "+15558675310"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    """The fake Twilio REST API, owning SENDER and a toll-free number."""
    with FakeTwilio(
        account_sid=ACCOUNT_SID,
        auth_token=TOKEN,
        api_key=API_KEY,
        api_secret=API_SECRET,
        numbers=(SENDER, TOLL_FREE),
    ) as server:
        yield server


@pytest.fixture
def media() -> Iterator[MediaServer]:
    """A loopback media server whose host:port is allowlisted for outbound URLs."""
    with MediaServer() as server:
        yield server


@dataclass
class Running:
    """The service on a loopback port: its URL, app, services, and environment."""

    url: str
    app: Any
    env: dict[str, str]
    #: Workflows built by `outbound_with`, closed with the app.
    built: list[Outbound] = field(default_factory=list)

    @property
    def services(self) -> Services:
        return self.app.extensions["receiver"]

    @property
    def outbound(self) -> Outbound:
        return self.services.outbound

    def outbound_with(self, **settings: Any) -> Outbound:
        """The outbound workflow over these services with some settings changed
        (e.g. a RECEIVER_PUBLIC_URL that no longer reaches the service)."""
        svc = self.services
        outbound = Outbound.build(
            dataclasses.replace(svc.settings, **settings),
            svc.index,
            svc.store,
            outbound_index=svc.outbound_index,
            links=svc.links,
            rest=svc.twilio,
        )
        self.built.append(outbound)
        return outbound


@pytest.fixture
def outbound_env(tmp_path: Path, fake: FakeTwilio, media: MediaServer) -> dict[str, str]:
    """Environment for the service and the CLI: REST at the fake, media hosts allowlisted."""
    port = free_port()
    return base_env(
        tmp_path,
        TWILIO_API_BASE=fake.url,
        TWILIO_API_KEY=API_KEY,
        TWILIO_API_SECRET=API_SECRET,
        RECEIVER_PUBLIC_URL=f"http://127.0.0.1:{port}",
        RECEIVER_MEDIA_HOSTS=f"{media.host_port},{fake.host_port}",
    )


@pytest.fixture
def serve() -> Iterator[Callable[[dict[str, str]], Running]]:
    """Factory: run the app for an environment on the port of its RECEIVER_PUBLIC_URL."""
    from receiver import create_app
    from receiver.settings import Settings

    started: list[tuple[Any, Running]] = []

    def start(env: dict[str, str]) -> Running:
        app = create_app(Settings.from_env(env))
        port = int(env["RECEIVER_PUBLIC_URL"].rsplit(":", 1)[1])
        server = serve_in_thread(app, port)
        running = Running(f"http://127.0.0.1:{port}", app, env)
        started.append((server, running))
        return running

    yield start
    for server, running in started:
        server.shutdown()
        server.server_close()
        for outbound in running.built:
            outbound.close()
        running.services.close()


@pytest.fixture
def service(serve: Callable[[dict[str, str]], Running], outbound_env: dict[str, str]) -> Running:
    """The service, configured for sending through the fake."""
    return serve(outbound_env)


def req(*media: str, **kwargs: Any) -> OutboundRequest:
    """A request from SENDER to RECIPIENT with `media`; `kwargs` override any field."""
    return OutboundRequest(
        to=kwargs.pop("to", RECIPIENT),
        from_=kwargs.pop("from_", SENDER),
        body=kwargs.pop("body", "Back in stock"),
        media=media,
        **kwargs,
    )


def write(tmp_path: Path, name: str, data: bytes) -> str:
    """Write `data` to tmp_path/name; returns the path as a CLI or request would name it."""
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def mcs() -> Iterator[FakeMcs]:
    """MCS and the Conversations API, taking the REST API key."""
    with FakeMcs(API_KEY, API_SECRET) as server:
        yield server


@pytest.fixture
def group(
    serve: Callable[[dict[str, str]], Running], outbound_env: dict[str, str], mcs: FakeMcs
) -> Running:
    """The service with MCS and Conversations at the fake (its temporary URLs allowed)."""
    hosts = f"{outbound_env['RECEIVER_MEDIA_HOSTS']},{mcs.host_port}"
    return serve(
        {
            **outbound_env,
            "TWILIO_MCS_BASE": mcs.url,
            "TWILIO_CONVERSATIONS_BASE": mcs.url,
            "RECEIVER_MEDIA_HOSTS": hosts,
        }
    )
