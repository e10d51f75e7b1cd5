"""`mms-receiver configure-conversations` against the fake Conversations API (real process)."""

from __future__ import annotations

from pathlib import Path

from receiver.twilio.webhook import CONVERSATION_EVENTS
from tests.conftest import base_env
from tests.inbound.test_live import run_cli
from tests.support.fake_mcs import FakeMcs
from tests.support.webhooks import ACCOUNT_SID, TOKEN

SERVICE = "IS" + "c" * 32


def test_sets_global_and_per_service_webhooks_with_dry_run(tmp_path: Path) -> None:
    with FakeMcs(ACCOUNT_SID, TOKEN) as fake:
        env = base_env(
            tmp_path,
            TWILIO_CONVERSATIONS_BASE=fake.url,
            RECEIVER_PUBLIC_URL="https://rx.example.com",
        )
        dry = run_cli(env, "configure-conversations", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert (
            "post_webhook_url: (none) -> https://rx.example.com/twilio/conversations" in dry.stdout
        )
        assert "dry run" in dry.stdout
        assert fake.webhooks[""]["post_webhook_url"] is None

        done = run_cli(env, "configure-conversations")
        assert done.returncode == 0, done.stderr
        assert fake.webhooks[""] == {
            "post_webhook_url": "https://rx.example.com/twilio/conversations",
            "pre_webhook_url": None,
            "method": "POST",
            "filters": sorted(CONVERSATION_EVENTS),
        }
        again = run_cli(env, "configure-conversations")
        assert "nothing to change" in again.stdout

        url = "https://other.example.com/twilio/conversations"
        one = run_cli(env, "configure-conversations", "--service", SERVICE, "--url", url)
        assert one.returncode == 0, one.stderr
        assert f"service {SERVICE}" in one.stdout
        assert fake.webhooks[SERVICE]["post_webhook_url"] == url
        assert fake.webhooks[""]["post_webhook_url"].startswith("https://rx.example.com")


def test_bad_input_names_the_fix(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    no_url = run_cli(env, "configure-conversations")
    assert no_url.returncode != 0 and "RECEIVER_PUBLIC_URL" in no_url.stderr
    bad = run_cli(env, "configure-conversations", "--service", "IS123", "--url", "https://x.io/")
    assert bad.returncode != 0 and "Conversations Service SID" in bad.stderr
    with FakeMcs(ACCOUNT_SID, "wrong-token") as fake:
        env = base_env(tmp_path, TWILIO_CONVERSATIONS_BASE=fake.url)
        refused = run_cli(
            env, "configure-conversations", "--url", "https://x.io/twilio/conversations"
        )
        assert refused.returncode != 0 and "Error" in refused.stderr


def test_configure_event_stream_prints_the_console_steps(tmp_path: Path) -> None:
    # Without REST credentials the Events API cannot be used: the Console steps instead.
    env = base_env(tmp_path, RECEIVER_PUBLIC_URL="https://rx.example.com", TWILIO_ACCOUNT_SID="")
    result = run_cli(env, "configure-event-stream")
    assert result.returncode == 0, result.stderr
    assert "Destination: https://rx.example.com/twilio/events" in result.stdout
    assert "com.twilio.conversations.message.added" in result.stdout
    assert "com.twilio.messaging.message.delivered" in result.stdout
    missing = run_cli(base_env(tmp_path), "configure-event-stream")
    assert missing.returncode != 0 and "RECEIVER_PUBLIC_URL" in missing.stderr
