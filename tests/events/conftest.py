"""Events fixtures: an index, a real receiver process on loopback, and a dispatcher wired to both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from receiver.events.delivery import HttpSender, Senders, SqsSender
from receiver.events.dispatcher import Dispatcher
from receiver.events.payloads import Payloads
from receiver.events.policy import RetryPolicy
from receiver.index import MediaIndex
from receiver.outbound import MediaLinks
from receiver.storage import open_store
from tests.support.hookserver import HookServer

#: Quick retries: the tests check the schedule's effect, not its length.
FAST = RetryPolicy(schedule=(0.0, 0.0, 0.0), disable_after=5 * 86400)


@dataclass
class Rig:
    """An index, the receiver process, and a dispatcher allowed to reach the receiver."""

    index: MediaIndex
    hooks: HookServer
    dispatcher: Dispatcher
    links: MediaLinks

    def drain(self, rounds: int = 50) -> int:
        """Run batches until nothing is due now; how many deliveries were claimed."""
        total = 0
        for _ in range(rounds):
            n = self.dispatcher.run_once()
            if n == 0:
                break
            total += n
        return total


def make_dispatcher(
    index: MediaIndex,
    root: Path,
    hosts: list[str],
    *,
    policy: RetryPolicy = FAST,
    timeout: float = 2.0,
    poll: float = 2.0,
    lease_seconds: float = 30.0,
) -> tuple[Dispatcher, MediaLinks]:
    """A dispatcher like the service's, with short timeouts and `hosts` allowed."""
    links = MediaLinks("test-secret-key")
    payloads = Payloads(
        open_store((root / "media").as_uri()),
        links.sign_media,
        public_url="https://receiver.example.com",
        link_ttl=3600,
    )
    senders = Senders(HttpSender(hosts, timeout=timeout), SqsSender())
    dispatcher = Dispatcher(
        index, payloads, senders, policy, lease_seconds=lease_seconds, poll=poll
    )
    return dispatcher, links


@pytest.fixture(scope="session")
def hook_process() -> Iterator[HookServer]:
    """One receiver process for the session (starting one per test costs ~0.5 s)."""
    server = HookServer().start()
    yield server
    server.stop()


@pytest.fixture
def hooks(hook_process: HookServer) -> HookServer:
    """The business's receiver, a real process verifying with `standardwebhooks`, reset."""
    hook_process.reset()
    return hook_process


@pytest.fixture
def rig(db_url: str, hooks: HookServer, tmp_path: Path) -> Iterator[Rig]:
    """Everything wired, on SQLite and PostgreSQL."""
    index = MediaIndex.open(db_url)
    dispatcher, links = make_dispatcher(index, tmp_path, [f"127.0.0.1:{hooks.port}"])
    yield Rig(index, hooks, dispatcher, links)
    dispatcher.stop()
    dispatcher.senders.close()
    index.close()
