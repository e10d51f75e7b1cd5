"""`send`, `configure-number` and `reconcile`: the outbound and Twilio-account commands.

Each command reads Settings, builds the services, and hands the work to
`receiver.outbound`; this module only parses options, shows progress and
prints results. The workflow modules (images, database) are imported inside
the commands, so `mms-receiver --help` and the other commands start fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from receiver.commands.common import load_services, load_settings
from receiver.errors import ConfigError, OutboundError, ReceiverError, TwilioApiError
from receiver.ratelimit import SENDER_TYPES, RateLimiter, RateLimits

if TYPE_CHECKING:
    from receiver.outbound import (
        BulkSummary,
        Outbound,
        OutboundRequest,
        PreparedMessage,
        SendResult,
    )
    from receiver.services import Services


def register(group: click.Group) -> None:
    """Add the commands to the `mms-receiver` group."""
    group.add_command(send)
    group.add_command(configure_number)
    group.add_command(reconcile)


@contextmanager
def _outbound(
    limits: RateLimits | None = None, grace: float | None = None
) -> Iterator[tuple[Services, Outbound]]:
    """Services and an outbound workflow with this command's rate limits, closed afterwards."""
    from receiver.outbound import Outbound
    from receiver.outbound.send import IN_FLIGHT_GRACE

    settings = load_settings()
    services = load_services(settings)
    outbound = Outbound.build(
        settings,
        services.index,
        services.store,
        outbound_index=services.outbound_index,
        links=services.links,
        rest=services.twilio,
        limiter=RateLimiter(limits),
        in_flight_grace=IN_FLIGHT_GRACE if grace is None else grace,
    )
    try:
        yield services, outbound
    finally:
        outbound.close()
        services.close()


def _exactly_one(first: object, second: object, message: str) -> None:
    """Fail with `message` unless exactly one of two alternative options was given."""
    if bool(first) == bool(second):
        raise click.UsageError(message)


def _limits(rate: str | None) -> RateLimits | None:
    """`--rate 5` (every sender) or `--rate toll_free=3,+15017122661=10` (by type or sender)."""
    if not rate:
        return None
    try:
        if rate.replace(".", "", 1).isdigit():
            return RateLimits.parse(",".join(f"{kind}={rate}" for kind in SENDER_TYPES))
        return RateLimits.parse(rate)
    except (ConfigError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--rate") from None


def _size(value: str | None) -> int | None:
    from receiver.outbound import parse_size

    if not value:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--carrier-budget") from None


@click.command()
@click.option("--to", "to", default=None, help="Recipient in E.164 form, e.g. +15558675310.")
@click.option("--from", "from_", default=None, help="Your Twilio number that sends.")
@click.option("--messaging-service", default=None, help="Send through a Messaging Service (MG...).")
@click.option("--body", default="", help="Message text (at most 1600 characters).")
@click.option("--media", multiple=True, help="A local file or an http(s) URL; repeat for more.")
@click.option(
    "--to-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Bulk: a CSV with a 'to' column (and optionally body, media, "
    "from, messaging_service_sid, key).",
)
@click.option(
    "--batch",
    default=None,
    help="Bulk: name of this send; rows already sent under "
    "it are skipped (default: derived from the CSV's path).",
)
@click.option(
    "--fallback",
    type=click.Choice(["link"]),
    default=None,
    help="Media MMS cannot carry (too big, wrong type, non-US/CA recipient) is sent as "
    "links in an SMS instead of being refused.",
)
@click.option(
    "--carrier-budget",
    default=None,
    help="Fit the whole message into this many bytes, e.g. 600KB (default 5MB).",
)
@click.option(
    "--validity-period",
    type=click.IntRange(1, 36000),
    default=None,
    help="Seconds Twilio may keep the message queued.",
)
@click.option(
    "--rate",
    default=None,
    help="Messages per second for this sender (e.g. 3), or "
    "per type: long_code=1,toll_free=3,short_code=30.",
)
@click.option("--idempotency-key", default=None, help="Send at most once under this key.")
@click.option(
    "--in-flight-grace",
    type=click.FloatRange(0, 3600),
    default=None,
    help="Seconds a send cut off by a crash may still reach Twilio; such rows are "
    "re-checked after this long before being sent again (default 35).",
)
@click.option(
    "--dry-run", is_flag=True, help="Check and fix the media, print the plan, send nothing."
)
@click.option(
    "--conversation",
    default=None,
    help="Send into this Conversation (CH...), e.g. a group MMS, instead of --to.",
)
@click.option("--author", default=None, help="With --conversation: the message's Author.")
def send(
    to: str | None,
    from_: str | None,
    messaging_service: str | None,
    body: str,
    media: tuple[str, ...],
    to_file: Path | None,
    batch: str | None,
    fallback: str | None,
    carrier_budget: str | None,
    validity_period: int | None,
    rate: str | None,
    idempotency_key: str | None,
    in_flight_grace: float | None,
    dry_run: bool,
    conversation: str | None,
    author: str | None,
) -> None:
    """Send an MMS (or a CSV of them) that Twilio and the carriers will accept, or say why not."""
    from receiver.outbound import OutboundRequest

    _exactly_one(
        to or conversation,
        to_file,
        "give exactly one of --to (one message), --conversation CH... or --to-file (bulk)",
    )
    if to and conversation:
        raise click.UsageError("give --to or --conversation, not both")
    budget = _size(carrier_budget)
    limits = _limits(rate)
    template = OutboundRequest(
        to=to or "",
        from_=from_,
        messaging_service_sid=messaging_service,
        body=body,
        media=media,
        fallback=fallback,
        carrier_budget=budget,
        validity_period=validity_period,
        idempotency_key=idempotency_key,
        conversation_sid=conversation,
        author=author,
    )
    if to_file is not None:
        _send_bulk(to_file, template, batch, limits, in_flight_grace, dry_run)
        return
    with _outbound(limits, in_flight_grace) as (_, outbound):
        try:
            result = outbound.send(template, dry_run=dry_run)
        except (OutboundError, ConfigError) as exc:
            raise click.ClickException(str(exc)) from None
        except TwilioApiError as exc:
            raise click.ClickException(f"Twilio refused the message: {exc}") from None
        _print_result(result)


def _print_result(result: SendResult) -> None:
    if result.prepared is not None:
        _print_plan(result.prepared)
    if result.status == "dry-run":
        click.echo("dry run: nothing was stored or sent")
    elif result.duplicate:
        click.echo(f"already sent as {result.sid} (status {result.status}); nothing sent again")
    else:
        click.echo(f"sent {result.sid} (status {result.status})")


def _print_plan(prepared: PreparedMessage) -> None:
    kind = {"mms": "MMS", "sms": "SMS", "link": "SMS with links"}[prepared.mode]
    size = f", {prepared.total_bytes:,} bytes of media" if prepared.mode == "mms" else ""
    target = prepared.request.conversation_sid or prepared.request.to
    click.echo(f"{kind} to {target}{size}")
    for i, item in enumerate(prepared.media, 1):
        dims = f" {item.width}x{item.height}" if item.width else ""
        click.echo(f"  media {i}: {item.filename} {item.content_type}{dims}, {item.size:,} bytes")
        for change in item.changes:
            click.echo(f"    - {change}")
    for note in prepared.notes:
        click.echo(f"  note: {note}")


def _send_bulk(
    path: Path,
    template: OutboundRequest,
    batch: str | None,
    limits: RateLimits | None,
    grace: float | None,
    dry_run: bool,
) -> None:
    from receiver.outbound import campaign_name, read_campaign

    name = batch or campaign_name(path)
    try:
        requests = read_campaign(path, template, name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    with _outbound(limits, grace) as (_, outbound):
        if dry_run:
            for request in requests:
                target = request.conversation_sid or request.to
                try:
                    plan = outbound.prepare(request, host=False)
                    click.echo(f"{target}: {plan.mode}, {len(plan.media)} media")
                except OutboundError as exc:
                    click.echo(f"{target}: cannot send: {exc}")
            click.echo("dry run: nothing was stored or sent")
            return
        click.echo(f"batch {name}: {len(requests)} row(s) from {path.name}", err=True)
        with click.progressbar(length=len(requests), label="sending", file=sys.stderr) as bar:
            summary = outbound.send_bulk(requests, on_row=lambda *_: bar.update(1))
    _print_summary(summary)


def _print_problems(problems: list[str]) -> None:
    # The first 50 are enough to act on; the rest would bury the summary line.
    for problem in problems[:50]:
        click.echo(f"  {problem}")


def _print_summary(summary: BulkSummary) -> None:
    click.echo(
        f"sent {summary.sent}, already sent {summary.already_sent}, refused {summary.refused}, "
        f"failed {summary.failed}"
    )
    _print_problems(summary.problems)
    if summary.aborted:
        raise click.ClickException(
            f"stopped: {summary.aborted}. Fix it and run the same command again: rows already "
            "sent are skipped"
        )
    if not summary.ok:
        sys.exit(1)


@click.command("configure-number")
@click.option("--number", default=None, help="Your Twilio number, E.164 (e.g. +15017122661).")
@click.option("--messaging-service", default=None, help="Or a Messaging Service SID (MG...).")
@click.option(
    "--url",
    default=None,
    help="The inbound webhook, e.g. https://example.com/twilio/"
    "messaging (default: RECEIVER_PUBLIC_URL + /twilio/messaging).",
)
@click.option(
    "--status-url",
    default=None,
    help="The delivery status callback (default: next to --url, /twilio/status).",
)
@click.option("--dry-run", is_flag=True, help="Print what would change, change nothing.")
def configure_number(
    number: str | None,
    messaging_service: str | None,
    url: str | None,
    status_url: str | None,
    dry_run: bool,
) -> None:
    """Point a Twilio number (or Messaging Service) at this service through the REST API."""
    from receiver.twilio.rest import TwilioRest

    _exactly_one(
        number, messaging_service, "give exactly one of --number +1... or --messaging-service MG..."
    )
    settings = load_settings()
    url = url or (f"{settings.public_url}/twilio/messaging" if settings.public_url else None)
    if not url:
        raise click.UsageError(
            "give --url https://.../twilio/messaging (or set RECEIVER_PUBLIC_URL)"
        )
    _check_url(url, "--url")
    status_url = status_url or _status_url(url)
    _check_url(status_url, "--status-url")
    if settings.public_url and not url.startswith(settings.public_url + "/"):
        click.echo(
            f"warning: --url is not under RECEIVER_PUBLIC_URL ({settings.public_url}); "
            "webhook signatures are checked against RECEIVER_PUBLIC_URL and will fail",
            err=True,
        )
    try:
        rest = TwilioRest.from_settings(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if number:
            _configure_number(rest, number, url, status_url, dry_run)
        else:
            assert messaging_service is not None
            _configure_service(rest, messaging_service, url, status_url, dry_run)
    except TwilioApiError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        rest.close()


def _status_url(url: str) -> str:
    if url.endswith("/twilio/messaging"):
        return url[: -len("messaging")] + "status"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/twilio/status"


def _check_url(url: str, option: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{url!r} is not an absolute http(s) URL", param_hint=option)
    if "_" in parts.hostname:
        raise click.BadParameter("Twilio refuses host names with underscores", param_hint=option)
    if parts.scheme != "https":
        click.echo(f"warning: {option} is not https; Twilio recommends https", err=True)


def _apply(current: dict[str, Any], wanted: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Print each field's old and new value; return the parameters that change."""
    changes: dict[str, str] = {}
    for param, (field, value) in wanted.items():
        old = current.get(field)
        old_text = "" if old is None else str(old).lower() if isinstance(old, bool) else str(old)
        if old_text == value:
            click.echo(f"  {field}: {value} (unchanged)")
        else:
            click.echo(f"  {field}: {old_text or '(none)'} -> {value}")
            changes[param] = value
    return changes


def _configure_number(rest: Any, number: str, url: str, status_url: str, dry_run: bool) -> None:
    found = rest.find_incoming_number(number)
    if found is None:
        raise click.ClickException(
            f"{number} is not a phone number of account {rest.account_sid}; check --number "
            "(E.164, e.g. +15017122661) and the credentials' account"
        )
    click.echo(f"{number} ({found['sid']}):")
    changes = _apply(found, {"SmsUrl": ("sms_url", url), "SmsMethod": ("sms_method", "POST")})
    click.echo(
        f"  message status callbacks: {status_url} (sent with every message by `send`; "
        "a number's own status callback is for voice calls)"
    )
    _finish(changes, dry_run, lambda: rest.update_incoming_number(found["sid"], changes))


def _configure_service(rest: Any, sid: str, url: str, status_url: str, dry_run: bool) -> None:
    service = rest.fetch_messaging_service(sid)
    click.echo(f"Messaging Service {sid} ({service.get('friendly_name', '')}):")
    changes = _apply(
        service,
        {
            "InboundRequestUrl": ("inbound_request_url", url),
            "InboundMethod": ("inbound_method", "POST"),
            "StatusCallback": ("status_callback", status_url),
            "UseInboundWebhookOnNumber": ("use_inbound_webhook_on_number", "false"),
        },
    )
    _finish(changes, dry_run, lambda: rest.update_messaging_service(sid, changes))


def _finish(changes: dict[str, str], dry_run: bool, update: Any) -> None:
    if not changes:
        click.echo("nothing to change")
    elif dry_run:
        click.echo(f"dry run: {len(changes)} change(s) not made")
    else:
        update()
        click.echo(f"updated {len(changes)} setting(s)")


@click.command()
@click.option(
    "--since", default="24h", show_default=True, help="How far back to look: 90m, 24h, 2d, 1w."
)
@click.option(
    "--include-text", is_flag=True, help="Also messages without media (e.g. missed STOPs)."
)
@click.option(
    "--deadline", default=60.0, show_default=True, help="Seconds to wait for one message's media."
)
def reconcile(since: str, include_text: bool, deadline: float) -> None:
    """Ingest inbound messages Twilio has but the index lacks (webhooks missed while down)."""
    from receiver.inbound.reconcile import Reconciler
    from receiver.outbound import parse_since

    try:
        window = parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    with _outbound() as (services, outbound):
        reconciler = Reconciler(services.index, services.pipeline, services.twilio)
        try:
            resolved, in_flight = outbound.resolve_unknown()
            messages = reconciler.inbound_since(window, include_text=include_text)
            what = "inbound message(s)" + ("" if include_text else " with media")
            click.echo(f"Twilio lists {len(messages)} {what} since {since} ago", err=True)
            with click.progressbar(messages, label="reconciling", file=sys.stderr) as bar:
                summary = reconciler.reconcile(bar, deadline=deadline)
            services.pipeline.shutdown(wait=True)
            moved = outbound.refresh_statuses(window)
        except (ConfigError, TwilioApiError) as exc:
            raise click.ClickException(str(exc)) from None
        except ReceiverError as exc:
            raise click.ClickException(f"reconcile stopped: {exc}") from None
    click.echo(
        f"{summary.listed} listed: {summary.known} already recorded, "
        f"{summary.ingested} ingested, {summary.failed} failed"
    )
    if moved or resolved or in_flight:
        click.echo(
            f"outbound: {moved} status(es) updated, {resolved} interrupted send(s) "
            f"resolved, {in_flight} still in flight (run again in a minute)"
        )
    _print_problems(summary.problems)
    if summary.failed:
        sys.exit(1)
