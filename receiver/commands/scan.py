"""`mms-receiver scan --since 30d`: rescan stored files after a signature update."""

from __future__ import annotations

from datetime import datetime

import click

from receiver.commands.common import load_services, load_settings
from receiver.commands.lifecycle import Moment
from receiver.errors import ReceiverError


@click.command()
@click.option(
    "--since",
    type=Moment(),
    default="30d",
    show_default=True,
    help="Files stored at or after: 2024-05-01, 2024-05-01T12:00Z or an age (30d).",
)
def scan(since: datetime) -> None:
    """Scan stored files with clamd again; matches become rejected (malware) and are removed."""
    from receiver.inbound.rescan import rescan
    from receiver.media.scan import ScanUnavailable

    settings = load_settings()
    services = load_services(settings)
    try:
        scanner = services.pipeline.scanner
        if scanner is None:
            raise click.ClickException(
                "scanning is off: set RECEIVER_CLAMD_URL (unix:///run/clamav/clamd.ctl or "
                "tcp://127.0.0.1:3310) to rescan with clamd"
            )
        click.echo(f"scanning files stored since {since:%Y-%m-%d %H:%M} UTC ...", err=True)
        report = rescan(services.index, services.store, scanner, since)
    except ScanUnavailable as exc:
        raise click.ClickException(
            f"{exc}; what was scanned is recorded: start clamd and run scan again"
        ) from None
    except ReceiverError as exc:
        raise click.ClickException(f"{exc}; run scan again to continue") from None
    finally:
        services.close()
    click.echo(report.summary())
    for media_id, signature in report.malware:
        click.echo(f"media {media_id}: {signature} (rejected, removed from storage)")


def register(group: click.Group) -> None:
    """Add `scan` to the `mms-receiver` command group."""
    group.add_command(scan)
