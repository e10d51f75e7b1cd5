"""`mms-receiver backfill`: perceptual hashes (and OCR text) for images stored before them."""

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
    default=None,
    help="Only images stored at or after: 2024-05-01, 2024-05-01T12:00Z or an age (30d). "
    "Default: all.",
)
@click.option("--dry-run", is_flag=True, help="Only count the images that would be done.")
@click.option(
    "--batch",
    default=100,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Images read and recorded together.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Also read again images whose text reading timed out or failed "
    "(after raising RECEIVER_OCR_TIMEOUT or updating tesseract).",
)
def backfill(since: datetime | None, dry_run: bool, batch: int, retry_failed: bool) -> None:
    """Hash stored images that have no perceptual hash and, with RECEIVER_OCR set, read
    their text. Safe to interrupt and run again: it goes on where it stopped."""
    from receiver.inbound.backfill import backfill as run_backfill

    settings = load_settings()
    services = load_services(settings)
    try:
        texts = services.pipeline.texts
        if texts is None and retry_failed:
            raise click.ClickException(
                "--retry-failed reads text again, but OCR is off: set RECEIVER_OCR (e.g. eng)"
            )
        if texts is None:
            click.echo("OCR is off (RECEIVER_OCR unset): only perceptual hashes", err=True)
        elif not texts.ready():
            raise click.ClickException(
                "; ".join(texts.reader.problems()) + "; then run backfill again"
            )
        report = run_backfill(
            services.index,
            services.store,
            texts,
            since=since,
            batch=batch,
            dry_run=dry_run,
            retry_failed=retry_failed,
            progress=lambda line: click.echo(line, err=True),
        )
    except ReceiverError as exc:
        raise click.ClickException(f"{exc}; run backfill again to continue") from None
    finally:
        services.close()
    click.echo(report.summary())


def register(group: click.Group) -> None:
    """Add `backfill` to the `mms-receiver` command group."""
    group.add_command(backfill)
