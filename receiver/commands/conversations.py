"""`configure-conversations` and `configure-event-stream`: point Twilio's Conversations
webhooks and Event Streams at this service."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import click

from receiver.commands.common import load_settings
from receiver.errors import ConfigError, TwilioApiError
from receiver.twilio import sids


def register(group: click.Group) -> None:
    """Add the commands to the `mms-receiver` group."""
    group.add_command(configure_conversations)
    group.add_command(configure_event_stream)


@click.command("configure-conversations")
@click.option(
    "--service",
    "services",
    multiple=True,
    help="A Conversations Service SID (IS...) to configure; repeat for several. "
    "Default: the account-wide (global) webhook configuration.",
)
@click.option(
    "--url",
    default=None,
    help="The webhook (default: RECEIVER_PUBLIC_URL + /twilio/conversations).",
)
@click.option("--dry-run", is_flag=True, help="Print what would change, change nothing.")
def configure_conversations(services: tuple[str, ...], url: str | None, dry_run: bool) -> None:
    """Set the Conversations post-event webhook: URL, POST, and the event filters kept here."""
    from receiver.commands.outbound import _check_url
    from receiver.twilio.rest import TwilioRest
    from receiver.twilio.webhook import CONVERSATION_EVENTS

    for sid in services:
        if not sids.CHAT_SERVICE.fullmatch(sid):
            raise click.BadParameter(
                f"{sid!r} is not a Conversations Service SID (IS and 32 letters or digits)",
                param_hint="--service",
            )
    settings = load_settings()
    url = url or (f"{settings.public_url}/twilio/conversations" if settings.public_url else None)
    if not url:
        raise click.UsageError(
            "give --url https://.../twilio/conversations (or set RECEIVER_PUBLIC_URL)"
        )
    _check_url(url, "--url")
    try:
        rest = TwilioRest.from_settings(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    filters = sorted(CONVERSATION_EVENTS)
    try:
        for service in services or (None,):
            _configure(rest, service, url, filters, dry_run)
    except TwilioApiError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        rest.close()


def _configure(rest: Any, service: str | None, url: str, filters: list[str], dry_run: bool) -> None:
    current = rest.fetch_conversations_webhooks(service)
    click.echo(f"Conversations webhooks ({f'service {service}' if service else 'global'}):")
    old_filters = sorted(str(f) for f in current.get("filters") or [])
    wanted = {
        "post_webhook_url": url,
        "method": "POST",
        "filters": ",".join(filters),
    }
    old = {
        "post_webhook_url": str(current.get("post_webhook_url") or ""),
        "method": str(current.get("method") or ""),
        "filters": ",".join(old_filters),
    }
    changed = False
    for field, value in wanted.items():
        if old[field] == value:
            click.echo(f"  {field}: {value} (unchanged)")
        else:
            click.echo(f"  {field}: {old[field] or '(none)'} -> {value}")
            changed = True
    if not changed:
        click.echo("nothing to change")
    elif dry_run:
        click.echo("dry run: nothing was changed")
    else:
        params = [("PostWebhookUrl", url), ("Method", "POST")]
        params += [("Filters", f) for f in filters]
        rest.update_conversations_webhooks(service, params)
        click.echo("updated")


#: The event types `configure-event-stream` suggests subscribing to, each handled by
#: POST /twilio/events (https://www.twilio.com/docs/events/event-types).
STREAM_TYPES = (
    "com.twilio.messaging.inbound-message.received",
    "com.twilio.messaging.message.queued",
    "com.twilio.messaging.message.sent",
    "com.twilio.messaging.message.delivered",
    "com.twilio.messaging.message.undelivered",
    "com.twilio.messaging.message.failed",
    "com.twilio.messaging.message.read",
    "com.twilio.conversations.conversation.added",
    "com.twilio.conversations.conversation.updated",
    "com.twilio.conversations.conversation.removed",
    "com.twilio.conversations.participant.added",
    "com.twilio.conversations.participant.updated",
    "com.twilio.conversations.participant.removed",
    "com.twilio.conversations.message.added",
    "com.twilio.conversations.message.updated",
    "com.twilio.conversations.message.removed",
)


#: The sink's and subscription's Description (Twilio asks for one without personal data).
STREAM_DESCRIPTION = "mms-receiver"


@click.command("configure-event-stream")
@click.option(
    "--url", default=None, help="The sink (default: RECEIVER_PUBLIC_URL + /twilio/events)."
)
@click.option("--dry-run", is_flag=True, help="Print what would change, change nothing.")
@click.option(
    "--batch/--no-batch",
    default=True,
    show_default=True,
    help="Whether Twilio may send several events per request (both are accepted).",
)
@click.option(
    "--test-id",
    default=None,
    help="Validate the sink with this test_id (from the service's log) instead of waiting "
    "for Twilio's test event to reach this service's index.",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 600),
    default=30.0,
    show_default=True,
    help="Seconds to wait for Twilio's test event.",
)
def configure_event_stream(
    url: str | None, dry_run: bool, batch: bool, test_id: str | None, wait: float
) -> None:
    """Create (or reuse) the Event Streams webhook sink for this service, validate it and
    subscribe it to the event types handled here; without credentials, print the Console
    steps."""
    from receiver.commands.outbound import _check_url
    from receiver.twilio.rest import TwilioRest

    settings = load_settings()
    url = url or (f"{settings.public_url}/twilio/events" if settings.public_url else None)
    if not url:
        raise click.UsageError("give --url https://.../twilio/events (or set RECEIVER_PUBLIC_URL)")
    _check_url(url, "--url")
    try:
        rest = TwilioRest.from_settings(settings)
    except ConfigError as exc:
        click.echo(f"{exc}. Without them, do it in the Console:")
        _console_steps(url)
        return
    try:
        _configure_stream(rest, settings, url, dry_run, batch, test_id, wait)
    except TwilioApiError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        rest.close()


def _configure_stream(
    rest: Any,
    settings: Any,
    url: str,
    dry_run: bool,
    batch: bool,
    test_id: str | None,
    wait: float,
) -> None:
    """The Events API steps (https://www.twilio.com/docs/events/event-streams/sink-resource): one
    webhook sink per destination, validated, then one subscription with our types."""
    found = [
        s for s in rest.list_sinks() if s.get("sink_type") == "webhook" and _destination(s) == url
    ]
    if found:
        sink = found[0]
        click.echo(f"sink {sink['sid']} -> {url} (exists, {sink.get('status')})")
    elif dry_run:
        click.echo(f"sink: would create a webhook sink -> {url} (POST, batch_events={batch})")
        click.echo("  then validate it with Twilio's test event and subscribe it to:")
        for event_type in STREAM_TYPES:
            click.echo(f"     {event_type}")
        click.echo("dry run: nothing was changed")
        return
    else:
        sink = rest.create_sink(STREAM_DESCRIPTION, url, batch=batch)
        click.echo(f"sink {sink['sid']} -> {url} (created, {sink.get('status')})")
    sid = str(sink["sid"])
    if sink.get("status") != "active":
        if dry_run:
            click.echo("  would validate it with Twilio's test event")
        else:
            _validate(rest, settings, sid, url, test_id, wait)
    subscriptions = rest.list_subscriptions(sid)
    if not subscriptions:
        if dry_run:
            click.echo(f"subscription: would subscribe the sink to {len(STREAM_TYPES)} types")
        else:
            made = rest.create_subscription(STREAM_DESCRIPTION, sid, list(STREAM_TYPES))
            click.echo(f"subscription {made['sid']} (created) for {len(STREAM_TYPES)} types:")
            for event_type in STREAM_TYPES:
                click.echo(f"     {event_type}")
    else:
        have = {
            str(t.get("type"))
            for sub in subscriptions
            for t in rest.list_subscribed_events(sub["sid"])
        }
        missing = [t for t in STREAM_TYPES if t not in have]
        first = subscriptions[0]["sid"]
        if not missing:
            click.echo(f"subscription {first}: all {len(STREAM_TYPES)} types (unchanged)")
        for event_type in missing:
            if dry_run:
                click.echo(f"subscription {first}: would add {event_type}")
            else:
                rest.add_subscribed_event(first, event_type)
                click.echo(f"subscription {first}: added {event_type}")
    click.echo("dry run: nothing was changed" if dry_run else "Event Streams sink ready")


def _destination(sink: dict[str, Any]) -> str | None:
    config = sink.get("sink_configuration")
    if isinstance(config, str):  # some answers carry it still encoded
        try:
            config = json.loads(config)
        except ValueError:
            return None
    return str(config.get("destination")) if isinstance(config, dict) else None


def _validate(
    rest: Any, settings: Any, sid: str, url: str, test_id: str | None, wait: float
) -> None:
    """Twilio sends a test event to the sink; its `test_id`, posted back, activates it
    (https://www.twilio.com/docs/events/event-streams/sink-resource). The running service keeps
    every delivered event in the index, so the id is read from there."""
    from receiver.commands.common import load_services
    from receiver.inbound.streams import SINK_TEST_EVENT
    from receiver.index.schema import utcnow

    if test_id is None:
        # A margin for the clock of a service on another host sharing the index.
        since = utcnow() - timedelta(seconds=5)
        rest.test_sink(sid)
        click.echo(f"  asked Twilio to send a test event to {url}; waiting up to {wait:.0f}s")
        services = load_services(settings)
        try:
            deadline = time.monotonic() + wait
            while True:
                ids = services.streams.index.test_ids(SINK_TEST_EVENT, since)
                if ids or time.monotonic() >= deadline:
                    break
                time.sleep(0.25)
        finally:
            services.close()
        if not ids:
            raise click.ClickException(
                f"Twilio's test event did not reach {url} within {wait:.0f}s: start "
                "`mms-receiver serve` there (on this index) and check that the URL is public, "
                f"then run this again (sink {sid} is kept), or pass --test-id from the "
                "service's log line 'Event Streams sink test event received'"
            )
        test_id = ids[0]
    answer = rest.validate_sink(sid, test_id)
    if answer.get("result") != "valid":
        raise click.ClickException(
            f"Twilio did not validate sink {sid} ({answer.get('result')!r}); run this again"
        )
    click.echo(f"  sink {sid} validated")


def _console_steps(url: str) -> None:
    click.echo(
        "Event Streams (https://www.twilio.com/docs/events/webhook-quickstart):\n"
        "1. Console > Event Streams > Manage > Create > Webhook sink:\n"
        f"     Destination: {url}\n"
        "     Method: POST; batch events: either (both are accepted)\n"
        "2. Twilio sends a test event to validate the sink; this service keeps it and\n"
        "   logs `Event Streams sink test event received: test_id=...` for the Console.\n"
        "3. Create a subscription for the sink with these event types:"
    )
    for event_type in STREAM_TYPES:
        click.echo(f"     {event_type}")
    click.echo("Deliveries are signed with your auth token and applied once per event id.")
