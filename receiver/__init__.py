"""mms-receiver: receive Twilio MMS safely and keep every attachment."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from receiver.services import Services
    from receiver.settings import Settings

__version__ = "0.1.0"


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """The Flask application: builds services once and registers the blueprints."""
    from receiver.web.app import build_app

    return build_app(settings, services)
