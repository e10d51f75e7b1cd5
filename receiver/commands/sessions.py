"""`mms-receiver sessions revoke --all`: log every browser out, in every worker and host."""

from __future__ import annotations

import click


@click.group()
def sessions() -> None:
    """Browser sessions held in the index."""


@sessions.command()
@click.option("--all", "everything", is_flag=True, help="End every browser session.")
def revoke(everything: bool) -> None:
    """End browser sessions: every copy of their cookies stops working at once."""
    from receiver.cli import load_settings
    from receiver.errors import ReceiverError
    from receiver.index import MediaIndex
    from receiver.index.sessions import SessionStore

    if not everything:
        raise click.UsageError("say which sessions: --all")
    settings = load_settings()
    try:
        index = MediaIndex.open(settings.database_url)
    except ReceiverError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        ended = SessionStore(index).revoke_all()
    finally:
        index.close()
    click.echo(f"revoked {ended} browser session(s); everyone must log in again")


def register(group: click.Group) -> None:
    """Add `sessions` to the `mms-receiver` command group."""
    group.add_command(sessions)
