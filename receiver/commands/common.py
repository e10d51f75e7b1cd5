"""What every command needs: Settings and Services, or a clean exit that names the fix.

Command modules import these from here, never from `receiver.cli`, which
imports the command modules to register them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from receiver.errors import ConfigError, IndexUnavailable, StorageError
from receiver.logs import configure_logging
from receiver.settings import Settings

if TYPE_CHECKING:
    from receiver.services import Services


def load_settings() -> Settings:
    """Settings from the environment, or a clean exit naming the variable and the fix."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings)
    return settings


def load_services(settings: Settings) -> Services:
    """Services for a command, or a clean exit that says what is unreachable."""
    from receiver.services import build_services

    try:
        return build_services(settings)
    except (ConfigError, StorageError, IndexUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
