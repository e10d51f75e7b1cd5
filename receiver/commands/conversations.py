"""`configure-conversations` and `configure-event-stream`: point Twilio's Conversations
webhooks and Event Streams at this service."""

from __future__ import annotations

import re
from typing import Any

import click

from receiver.commands.common import load_settings
from receiver.errors import ConfigError, TwilioApiError

_SERVICE_SID = re.compile(r"IS[A-Za-z0-9]{32}")


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
        if not _SERVICE_SID.fullmatch(sid):
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


@click.command("configure-event-stream")
@click.option(
    "--url", default=None, help="The sink (default: RECEIVER_PUBLIC_URL + /twilio/events)."
)
def configure_event_stream(url: str | None) -> None:
    """Print the exact steps that point an Event Streams webhook sink at this service."""
    from receiver.commands.outbound import _check_url

    settings = load_settings()
    url = url or (f"{settings.public_url}/twilio/events" if settings.public_url else None)
    if not url:
        raise click.UsageError("give --url https://.../twilio/events (or set RECEIVER_PUBLIC_URL)")
    _check_url(url, "--url")
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
