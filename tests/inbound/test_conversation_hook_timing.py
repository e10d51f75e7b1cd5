"""Conversations' 5 s webhook timeout, measured against the service on a real loopback port.

The sender plays Conversations (tests/support/conversation_hooks.py): signed form
posts, a 5 s timeout, and a retry with RetryCount + 1 for a delivery not answered
2xx in time. MCS (tests/support/fake_mcs.py) is made slower than the timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from receiver.services import Services
from tests.conftest import base_env
from tests.inbound.test_conversations import SERVICE, media_item, message_params
from tests.support.conversation_hooks import (
    WEBHOOK_TIMEOUT,
    ConversationsHookSender,
    FlakyFront,
)
from tests.support.fake_mcs import FakeMcs
from tests.support.loopback import serve_in_thread
from tests.support.samples import jpeg
from tests.support.services import free_port
from tests.support.waiting import wait_for
from tests.support.webhooks import ACCOUNT_SID, TOKEN, new_sid

#: "Well inside" the timeout: half of it, on a loaded machine.
ANSWER_BUDGET = WEBHOOK_TIMEOUT / 2


@dataclass
class Stack:
    services: Services
    mcs: FakeMcs
    front: FlakyFront
    sender: ConversationsHookSender


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    from receiver import create_app
    from receiver.settings import Settings

    port = free_port()
    with (
        FakeMcs(ACCOUNT_SID, TOKEN) as mcs,
        FlakyFront(f"http://127.0.0.1:{port}") as front,
    ):
        env = base_env(
            tmp_path,
            TWILIO_MCS_BASE=mcs.url,
            RECEIVER_MEDIA_HOSTS=mcs.host_port,
            RECEIVER_PUBLIC_URL=front.url,
        )
        app = create_app(Settings.from_env(env))
        server: Any = serve_in_thread(app, port)
        sender = ConversationsHookSender(front.url + "/twilio/conversations", TOKEN)
        try:
            yield Stack(app.extensions["receiver"], mcs, front, sender)
        finally:
            sender.close()
            server.shutdown()
            server.server_close()
            app.extensions["receiver"].close()


def states(services: Services, sid: str) -> list[str]:
    return [item.state for item in services.index.media_of(sid)]


def test_answers_well_inside_5s_while_mcs_takes_8s(stack: Stack) -> None:
    stack.mcs.latency = 8.0
    conversation = new_sid("CH")
    sids = [new_sid("IM") for _ in range(4)]
    started = time.monotonic()
    for n, sid in enumerate(sids):
        media = [media_item(stack.mcs.add(SERVICE, jpeg(32 + k, 32), "image/jpeg")) for k in (0, 1)]
        (delivery,) = stack.sender.send(message_params(sid, conversation, media=media, index=n))
        assert delivery.status == 200 and delivery.retry_count == 0
        # Every answer, even with the media threads all waiting on MCS, is well inside 5 s.
        assert delivery.seconds < ANSWER_BUDGET, f"answered in {delivery.seconds:.2f}s"
        assert states(stack.services, sid) == ["pending", "pending"]
    print(f"4 webhooks with 2 MCS files each answered in {time.monotonic() - started:.2f}s")
    # The files follow once MCS answers (8 s each, fetched concurrently in the background).
    assert wait_for(lambda: all(states(stack.services, s) == ["stored"] * 2 for s in sids), 40)
    assert stack.services.conversations.index.message_sids(conversation) == sids


def test_failed_and_timed_out_deliveries_are_retried_and_stored_once(stack: Stack) -> None:
    conversation = new_sid("CH")
    # 1. The first delivery never reaches the service (502 from the front).
    lost = new_sid("IM")
    stack.front.faults = ["502"]
    media = [media_item(stack.mcs.add(SERVICE, jpeg(20, 20), "image/jpeg"))]
    attempts = stack.sender.send(message_params(lost, conversation, media=media))
    assert [(a.retry_count, a.status) for a in attempts] == [(0, 502), (1, 200)]
    assert stack.front.forwarded == 1

    # 2. The first delivery reaches the service, but its answer comes after the 5 s:
    # Conversations times out and sends it again with RetryCount=1.
    late = new_sid("IM")
    stack.front.faults = ["hold"]
    media = [media_item(stack.mcs.add(SERVICE, jpeg(24, 20), "image/jpeg"))]
    attempts = stack.sender.send(message_params(late, conversation, media=media, index=1))
    assert [(a.retry_count, a.status) for a in attempts] == [(0, None), (1, 200)]
    assert attempts[0].error == "ReadTimeout" and attempts[0].seconds >= WEBHOOK_TIMEOUT
    assert attempts[1].seconds < ANSWER_BUDGET
    assert stack.front.forwarded == 3

    # Each message, and each of its files, is stored once.
    index = stack.services.conversations.index
    assert index.message_sids(conversation) == [lost, late]
    for sid in (lost, late):
        assert wait_for(lambda s=sid: states(stack.services, s) == ["stored"])
        message = stack.services.index.get_message(sid)
        assert message is not None and message.num_media == 1
    fetched = [r for r in stack.mcs.requests if r.path.startswith("/temporary/")]
    assert len(fetched) == 2
