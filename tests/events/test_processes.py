"""Events across real processes: an SQS queue on moto's server, and a worker killed mid-delivery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from receiver.events.signing import new_secret
from receiver.index import MediaIndex
from tests.conftest import base_env
from tests.events.conftest import make_dispatcher
from tests.index.rows import message
from tests.support.hookserver import HookServer
from tests.support.s3server import start_moto_server
from tests.support.waiting import wait_for
from tests.support.webhooks import WebhookPoster, inbound_params, new_sid


def test_an_sqs_queue_gets_the_same_signed_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto = start_moto_server()
    try:
        for name, value in moto.env().items():
            monkeypatch.setenv(name, value)
        import boto3

        sqs = boto3.client("sqs")
        queue = sqs.create_queue(QueueName="mms-events")["QueueUrl"]
        index = MediaIndex.open(f"sqlite:///{tmp_path / 'ix.db'}")
        dispatcher, _ = make_dispatcher(index, tmp_path, [])
        secret = new_secret()
        index.add_endpoint("sqs://mms-events", secret=secret)
        index.record_message(message(1, num_media=0), [])
        assert dispatcher.run_once() == 2
        got = sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )["Messages"]
        assert len(got) == 2
        ids = set()
        for m in got:
            attributes = {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
            # A consumer on another machine verifies exactly as an HTTP receiver does.
            Webhook(secret).verify(m["Body"].encode(), attributes)
            ids.add(attributes["webhook-id"])
            assert json.loads(m["Body"])["data"]["sid"] == message(1)["sid"]
        assert ids == {e.id for e in index.list_events()}
        # A queue that does not exist is a failure with the reason, retried later.
        index.add_endpoint("sqs://no-such-queue", secret=secret)
        index.record_message(message(2, num_media=0), [])
        dispatcher.run_once()
        (failed,) = [
            d for e in index.list_events() for d in e.deliveries if d["last_error"] is not None
        ]
        assert "SQS" in failed["last_error"] and failed["state"] == "pending"
        dispatcher.senders.close()
        index.close()

        # `endpoints add` asks SQS first: a missing queue is refused with the fix.
        env = {**os.environ, **base_env(tmp_path / "cli"), **moto.env()}
        (tmp_path / "cli" / "data").mkdir(parents=True, mode=0o700)

        def add(url: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "receiver", "endpoints", "add", url],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        refused = add("sqs://missing-queue")
        assert refused.returncode != 0, refused.stderr
        assert "missing-queue" in refused.stderr and "create-queue" in refused.stderr
        added = add("sqs://mms-events")
        assert added.returncode == 0, added.stderr
        assert "whsec_" in added.stdout
    finally:
        moto.stop()


def test_sigkill_mid_delivery_is_retried(tmp_path: Path) -> None:
    hooks = HookServer()
    secret = new_secret()
    hooks.start(secrets=[secret])
    env = base_env(
        tmp_path,
        RECEIVER_EVENT_HOSTS=f"127.0.0.1:{hooks.port}",
        RECEIVER_FETCH_DEADLINE="1",
        RECEIVER_LEASE_SECONDS="2",
    )
    (tmp_path / "data").mkdir(mode=0o700)
    index = MediaIndex.open(f"sqlite:///{tmp_path / 'data' / 'receiver.db'}")
    worker = None
    try:
        index.add_endpoint(hooks.url + "/in", secret=secret)
        hooks.control(mode="slow:60")
        index.record_message(message(1, num_media=0), [])
        worker = subprocess.Popen(
            [sys.executable, "-m", "receiver", "worker", "--interval", "0.2"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for(lambda: len(hooks.received()) == 1, 30)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        hooks.control(mode="ok")
        # Another process takes over once the killed one's lease has run out.
        dispatcher, _ = make_dispatcher(index, tmp_path, [f"127.0.0.1:{hooks.port}"])
        assert wait_for(
            lambda: dispatcher.run_once() >= 0 and not index.list_events(state="pending"), 20
        )
        got = hooks.received()
        first = got[0]["id"]
        assert [r["id"] for r in got].count(first) == 2  # the interrupted one, again
        assert {r["id"] for r in got} == {e.id for e in index.list_events()}
        assert all(r["verified_with"] == 0 for r in got)
        dispatcher.senders.close()
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        hooks.stop()
        index.close()


def test_serve_workers_deliver_events_without_a_worker_process(
    tmp_path: Path, live_server: Any, hooks: HookServer
) -> None:
    secret = new_secret()
    hooks.control(mode="ok", secrets=[secret])
    env = base_env(
        tmp_path,
        RECEIVER_EVENT_URL=hooks.url + "/env",
        RECEIVER_EVENT_SECRET=secret,
        RECEIVER_EVENT_HOSTS=f"127.0.0.1:{hooks.port}",
    )
    server = live_server(env, ["--workers", "2"])
    url = server.url + "/twilio/messaging"
    poster = WebhookPoster(requests.Session(), base=server.url)
    sids = [new_sid("SM") for _ in range(6)]
    for message_sid in sids:
        params = inbound_params(message_sid, body="hi")
        answer = requests.post(
            url, data=params, headers={"X-Twilio-Signature": poster.sign(url, params)}, timeout=10
        )
        assert answer.status_code == 200
    # Each message: received and completed, delivered by the serve workers' own dispatchers.
    assert wait_for(lambda: len(hooks.received()) == 12, 20)
    got = hooks.received()
    assert all(r["verified_with"] == 0 for r in got)
    assert sorted(r["body"]["data"]["sid"] for r in got) == sorted(sids * 2)
