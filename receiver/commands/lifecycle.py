"""`mms-receiver purge` and `mms-receiver export`: retention and data portability."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any, TextIO

import click

from receiver.commands.common import load_services, load_settings
from receiver.errors import ConfigError, ReceiverError


class _Parsed(click.ParamType):
    """An option value read by `_parse`, whose ValueError names the accepted forms."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse the option value or fail with the accepted forms."""
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def _parse(self, value: Any) -> Any:
        raise NotImplementedError


class Moment(_Parsed):
    """A date, a date-time or an age ago (``24h``, ``7d``), as an aware UTC datetime."""

    name = "moment"

    def _parse(self, value: Any) -> datetime:
        from receiver.lifecycle import parse_moment

        if isinstance(value, datetime):
            return value
        return parse_moment(str(value))


class Age(_Parsed):
    """An age such as ``90d``, ``12h`` or ``2w`` (a bare number means days)."""

    name = "age"

    def _parse(self, value: Any) -> Any:
        from receiver.lifecycle import parse_duration

        return parse_duration(str(value))


@click.command()
@click.option(
    "--older-than",
    type=Age(),
    default=None,
    help="Purge messages older than this (90d, 12h); default RECEIVER_RETENTION_DAYS.",
)
@click.option(
    "--execute",
    is_flag=True,
    help="Really delete. Without it, purge only reports what it would delete.",
)
@click.option(
    "--batch",
    default=200,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Messages read per query.",
)
@click.option("--keep-outbound", is_flag=True, help="Keep prepared outbound files.")
def purge(older_than: Any, execute: bool, batch: int, keep_outbound: bool) -> None:
    """Delete messages past retention: objects first, then rows (dry run unless --execute).

    Safe to interrupt and run again: a second run finishes what the first began.
    """
    from receiver.lifecycle import count_messages, retention_cutoff
    from receiver.lifecycle import purge as run_purge

    settings = load_settings()
    try:
        cutoff = retention_cutoff(settings.retention_days, older_than)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    services = load_services(settings)
    try:
        total = count_messages(services.index, until=cutoff)
        label = "purging" if execute else "checking"
        with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
            report = run_purge(
                services.index,
                services.store,
                cutoff,
                dry_run=not execute,
                batch_size=batch,
                progress=bar.update,
                include_outbound=not keep_outbound,
            )
    except ReceiverError as exc:
        raise click.ClickException(f"{exc}; nothing is lost: run purge again to finish") from None
    finally:
        services.close()
    click.echo(report.summary())
    if not execute and (report.messages or report.outbound_objects):
        click.echo("dry run: nothing was deleted; add --execute to delete")


@click.command()
@click.option(
    "--since",
    type=Moment(),
    required=True,
    help="Messages received at or after: 2024-05-01, 2024-05-01T12:00Z or an age (7d).",
)
@click.option("--until", type=Moment(), default=None, help="And before this moment.")
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8", atomic=True),
    default="-",
    show_default=True,
    help="JSON-lines file to write ('-' for standard output).",
)
def export(since: datetime, until: datetime | None, output: TextIO) -> None:
    """Write messages with their media manifest as JSON lines (one message per line)."""
    from receiver.lifecycle import count_messages
    from receiver.lifecycle import export as run_export

    settings = load_settings()
    services = load_services(settings)
    try:
        total = count_messages(services.index, since=since, until=until)
        with click.progressbar(
            length=total, label="exporting", file=sys.stderr, show_pos=True
        ) as bar:
            written = run_export(
                services.index, output, since=since, until=until, progress=bar.update
            )
    except ReceiverError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(f"exported {written} message(s)", err=True)


def register(group: click.Group) -> None:
    """Add `purge` and `export` to the `mms-receiver` command group."""
    group.add_command(purge)
    group.add_command(export)
