"""`mms-receiver endpoints ...` and `mms-receiver events`: where events go, what became of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from receiver.commands.common import load_services, load_settings
from receiver.commands.lifecycle import Moment

if TYPE_CHECKING:
    from receiver.services import Services


@contextmanager
def _services() -> Iterator[Services]:
    services = load_services(load_settings())
    try:
        yield services
    finally:
        services.close()


def _types(raw: str | None) -> list[str]:
    return [t.strip() for t in (raw or "").split(",") if t.strip()]


@click.group()
def endpoints() -> None:
    """Endpoints that receive signed events (Standard Webhooks, or an SQS queue)."""


@endpoints.command("add")
@click.argument("url")
@click.option(
    "--events", "types", default=None, help="Event types, comma separated (default: all)."
)
@click.option("--description", default="", help="A note for people (shown by `list`).")
@click.option("--json", "as_json", is_flag=True, help="Print the id and secret as JSON.")
def add(url: str, types: str | None, description: str, as_json: bool) -> None:
    """Add an endpoint; prints its id and its signing secret (whsec_...)."""
    with _services() as services:
        try:
            endpoint, secret = services.events.add_endpoint(
                url, _types(types), description, source="cli"
            )
        except ValueError as exc:
            raise click.ClickException(f"{url}: {exc}") from None
    if as_json:
        click.echo(json.dumps({**endpoint.public(), "secret": secret}, indent=2))
        return
    click.echo(endpoint.id)
    click.echo(secret)
    click.echo(
        "Verify each request with this secret (the standardwebhooks library does it); "
        "it is not shown again.",
        err=True,
    )


@endpoints.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List endpoints: id, state, events, URL."""
    with _services() as services:
        found = services.index.list_endpoints()
        backlog = services.index.event_figures().backlog_by_endpoint
    if as_json:
        click.echo(
            json.dumps([{**e.public(), "backlog": backlog.get(e.id, 0)} for e in found], indent=2)
        )
        return
    if not found:
        click.echo("no endpoints; add one with `mms-receiver endpoints add URL`")
    for e in found:
        state = "enabled" if e.enabled else f"DISABLED ({e.disabled_reason})"
        kinds = ",".join(e.events) or "*"
        click.echo(
            f"{e.id}  {state}  {kinds}  {e.url}  backlog={backlog.get(e.id, 0)}"
            + (f"  # {e.description}" if e.description else "")
        )


@endpoints.command("remove")
@click.argument("endpoint_id")
def remove(endpoint_id: str) -> None:
    """Remove an endpoint: nothing more is delivered to it."""
    with _services() as services:
        if not services.index.remove_endpoint(endpoint_id):
            raise click.ClickException(f"no endpoint {endpoint_id}; see `endpoints list`")
    click.echo(f"removed {endpoint_id}")


@endpoints.command("rotate-secret")
@click.argument("endpoint_id")
def rotate_secret(endpoint_id: str) -> None:
    """Print a new secret; the old one also signs for 24 h."""
    with _services() as services:
        secret = services.events.rotate_secret(endpoint_id)
    if secret is None:
        raise click.ClickException(f"no endpoint {endpoint_id}; see `endpoints list`")
    click.echo(secret)
    click.echo("Both secrets sign every event for the next 24 hours.", err=True)


@endpoints.command("test")
@click.argument("endpoint_id")
def test(endpoint_id: str) -> None:
    """Send an endpoint.test event to one endpoint."""
    with _services() as services:
        event_id = services.events.test(endpoint_id)
        if event_id is None:
            raise click.ClickException(f"no endpoint {endpoint_id}; see `endpoints list`")
        services.events.dispatcher.run_once()
        event = services.index.get_event(event_id)
    click.echo(f"{event_id} endpoint.test")
    for line in _attempt_lines(event.as_dict() if event else {}):
        click.echo(line)


@endpoints.command("replay")
@click.argument("endpoint_id")
@click.option("--since", type=Moment(), default=None, help="Every event since (24h, 2024-05-01).")
@click.option("--event", "event_id", default=None, help="One event, by id (evt_...).")
def replay(endpoint_id: str, since: datetime | None, event_id: str | None) -> None:
    """Deliver events again (same ids: receivers deduplicate); re-enables the endpoint."""
    if (since is None) == (event_id is None):
        raise click.UsageError("say what to replay: --since 24h or --event EVENT_ID")
    with _services() as services:
        if services.index.get_endpoint(endpoint_id) is None:
            raise click.ClickException(f"no endpoint {endpoint_id}; see `endpoints list`")
        n = services.events.replay(endpoint_id, event_id=event_id, since=since)
    click.echo(f"{n} event(s) due again to {endpoint_id}; `serve` or `worker` delivers them")


@click.command("events")
@click.option(
    "--failed", is_flag=True, help="Only events an endpoint did not get after its last retry."
)
@click.option("--type", "kind", default=None, help="Only this event type.")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with attempts).")
def events(failed: bool, kind: str | None, limit: int, as_json: bool) -> None:
    """List events with their deliveries and attempts, newest first."""
    with _services() as services:
        found = services.index.list_events(
            limit=limit, type=kind, state="failed" if failed else None
        )
        full = [services.index.get_event(e.id) for e in found]
    docs = [e.as_dict() for e in full if e is not None]
    if as_json:
        click.echo(json.dumps(docs, indent=2))
        return
    if not docs:
        click.echo("no failed events" if failed else "no events")
    for doc in docs:
        click.echo(f"{doc['id']}  {doc['type']}  {doc['created_at']}  {doc['message_sid'] or ''}")
        for line in _attempt_lines(doc):
            click.echo(line)


def _attempt_lines(doc: dict[str, Any]) -> Iterator[str]:
    for d in doc.get("deliveries", []):
        yield f"  -> {d['endpoint_id']}  {d['state']}  attempts={d['attempts']}"
    for a in doc.get("attempts", []):
        result = a["status"] if a["status"] is not None else "-"
        error = f"  {a['error']}" if a["error"] else ""
        yield f"     {a['at']}  {a['endpoint_id']}  #{a['attempt']}  {result}{error}"


def register(group: click.Group) -> None:
    """Add `endpoints` and `events` to the `mms-receiver` command group."""
    group.add_command(endpoints)
    group.add_command(events)
