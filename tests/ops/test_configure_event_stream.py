"""`mms-receiver configure-event-stream` against the fake Events API (real processes).

The service runs on a loopback port; the fake really delivers Twilio's signed test event
to it, and the command reads the test_id from the shared index to validate the sink.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from receiver.commands.conversations import STREAM_TYPES
from tests.conftest import base_env
from tests.inbound.test_live import run_cli
from tests.support.fake_events import FakeEvents
from tests.support.loopback import serving
from tests.support.services import free_port
from tests.support.webhooks import ACCOUNT_SID, TOKEN


@pytest.fixture
def events() -> Iterator[FakeEvents]:
    with FakeEvents(ACCOUNT_SID, TOKEN, token=TOKEN, page_size=2) as fake:
        yield fake


def stream_env(tmp_path: Path, events: FakeEvents) -> dict[str, str]:
    return base_env(
        tmp_path,
        TWILIO_EVENTS_BASE=events.url,
        RECEIVER_PUBLIC_URL=f"http://127.0.0.1:{free_port()}",
    )


@pytest.fixture
def running(tmp_path: Path, events: FakeEvents) -> Iterator[dict[str, str]]:
    """The service on the port of RECEIVER_PUBLIC_URL; yields the environment."""
    from receiver import create_app
    from receiver.settings import Settings

    env = stream_env(tmp_path, events)
    app = create_app(Settings.from_env(env))
    try:
        with serving(app, int(env["RECEIVER_PUBLIC_URL"].rsplit(":", 1)[1])):
            yield env
    finally:
        app.extensions["receiver"].close()


def subscribed(events: FakeEvents, sink: str) -> list[str]:
    return [
        t["type"]
        for s in events.subscriptions.values()
        if s["sink_sid"] == sink
        for t in s["types"]
    ]


def test_creates_validates_and_subscribes_once(running: dict[str, str], events: FakeEvents) -> None:
    url = running["RECEIVER_PUBLIC_URL"] + "/twilio/events"
    dry = run_cli(running, "configure-event-stream", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would create a webhook sink -> {url}" in dry.stdout
    assert events.sinks == {} and events.posted("/v1/Sinks") == []

    done = run_cli(running, "configure-event-stream")
    assert done.returncode == 0, done.stderr + done.stdout
    (sid,) = events.sinks
    sink = events.sinks[sid]
    assert sink["status"] == "active"
    assert sink["sink_type"] == "webhook"
    assert sink["sink_configuration"] == {
        "destination": url,
        "method": "POST",
        "batch_events": True,
    }
    # The test event went through the service's signed sink (200) and validated the sink.
    assert events.deliveries == [(sid, "200")]
    assert f"sink {sid} validated" in done.stdout
    assert subscribed(events, sid) == list(STREAM_TYPES)
    (form,) = events.posted("/v1/Subscriptions")
    assert [json.loads(v) for k, v in form if k == "Types"] == [{"type": t} for t in STREAM_TYPES]

    # Idempotent: the sink is found by its destination and nothing is created again.
    again = run_cli(running, "configure-event-stream")
    assert again.returncode == 0, again.stderr
    assert f"sink {sid} -> {url} (exists, active)" in again.stdout
    assert "(unchanged)" in again.stdout
    assert len(events.posted("/v1/Sinks")) == 1
    assert len(events.posted("/v1/Subscriptions")) == 1
    assert len(events.sinks) == 1


def test_reuses_an_active_sink_on_a_later_page_and_adds_missing_types(
    tmp_path: Path, events: FakeEvents
) -> None:
    env = stream_env(tmp_path, events)
    url = env["RECEIVER_PUBLIC_URL"] + "/twilio/events"
    for n in range(3):
        events.add_sink(f"https://other{n}.example.com/events")
    sid = events.add_sink(url)
    first = run_cli(env, "configure-event-stream")
    assert first.returncode == 0, first.stderr
    assert events.posted("/v1/Sinks") == [] and events.posted(f"/v1/Sinks/{sid}/Test") == []
    (sub,) = events.subscriptions.values()
    # A type dropped from the subscription (by hand in the Console) is put back.
    sub["types"] = [t for t in sub["types"] if t["type"] != STREAM_TYPES[-1]]
    dry = run_cli(env, "configure-event-stream", "--dry-run")
    assert f"would add {STREAM_TYPES[-1]}" in dry.stdout
    assert len(subscribed(events, sid)) == len(STREAM_TYPES) - 1
    fixed = run_cli(env, "configure-event-stream")
    assert fixed.returncode == 0, fixed.stderr
    assert sorted(subscribed(events, sid)) == sorted(STREAM_TYPES)
    assert len(events.posted("/v1/Subscriptions")) == 1


def test_unreached_test_event_names_the_fix_and_test_id_validates(
    tmp_path: Path, events: FakeEvents
) -> None:
    env = stream_env(tmp_path, events)  # nothing listens on RECEIVER_PUBLIC_URL
    failed = run_cli(env, "configure-event-stream", "--wait", "1")
    assert failed.returncode != 0
    assert "did not reach" in failed.stderr and "--test-id" in failed.stderr
    (sid,) = events.sinks
    assert events.sinks[sid]["status"] == "validating" and events.subscriptions == {}
    test_id: Any = events.test_ids[sid]  # what the service would have logged
    done = run_cli(env, "configure-event-stream", "--test-id", test_id)
    assert done.returncode == 0, done.stderr
    assert events.sinks[sid]["status"] == "active" and len(events.sinks) == 1
    assert subscribed(events, sid) == list(STREAM_TYPES)


def test_without_credentials_prints_console_steps_and_bad_ones_name_the_fix(
    tmp_path: Path, events: FakeEvents
) -> None:
    env = {**stream_env(tmp_path, events), "TWILIO_ACCOUNT_SID": ""}
    steps = run_cli(env, "configure-event-stream", "--url", "https://rx.example.com/twilio/events")
    assert steps.returncode == 0, steps.stderr
    assert "TWILIO_ACCOUNT_SID" in steps.stdout
    assert "Destination: https://rx.example.com/twilio/events" in steps.stdout
    assert "com.twilio.conversations.message.added" in steps.stdout
    assert events.calls == []
    wrong = {**stream_env(tmp_path, events), "TWILIO_AUTH_TOKEN": "another-token-0123456789abcd"}
    refused = run_cli(wrong, "configure-event-stream")
    assert refused.returncode != 0 and "TWILIO_API_KEY" in refused.stderr
    assert events.sinks == {}
