"""Application assembly: settings, services, blueprints, error pages."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from receiver.errors import IndexUnavailable
from receiver.replies import templates_dir
from receiver.services import Services, build_services
from receiver.settings import Settings

log = logging.getLogger(__name__)


def build_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Create the app; nothing is built at import time."""
    if services is None:
        settings = settings or Settings.from_env()
        services = build_services(settings)
    settings = services.settings
    app = Flask(__name__, template_folder=str(templates_dir()), static_folder=None)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.https,
        SESSION_COOKIE_NAME="mmsr_session",
        JSON_SORT_KEYS=False,
    )
    app.extensions["receiver"] = services

    from receiver.web import (
        analytics,
        api,
        browse,
        conversations,
        events_api,
        events_page,
        hooks,
        inbox,
        media_links,
        metrics_view,
        ops,
        outbound_api,
        reply_box,
        stream,
    )

    # Every feature is registered here, explicitly: a missing module is an ImportError.
    app.register_blueprint(hooks.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(api.bp)
    browse.register(app)
    outbound_api.register(app)
    media_links.register(app)
    metrics_view.register(app)
    app.register_blueprint(conversations.bp)
    analytics.register(app)
    inbox.register(app)
    reply_box.register(app)
    stream.register(app)
    events_api.register(app)
    events_page.register(app)
    _register_errors(app)
    return app


def _register_errors(app: Flask) -> None:
    @app.errorhandler(IndexUnavailable)
    def index_down(exc: IndexUnavailable) -> tuple[Response, int]:
        """The database is down: 503 so Twilio's retry or fallback URL takes over."""
        log.error(
            "index unavailable, answering 503 for %s %s: %s", request.method, request.path, exc
        )
        resp = jsonify(
            error="index_unavailable", message="the message index is unavailable; retry later"
        )
        resp.headers["Retry-After"] = "5"
        return resp, 503

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        """Every HTTP error as a short JSON (API) or text answer with its reason."""
        code = exc.code or 500
        message = exc.description or exc.name
        if (
            request.path.startswith(("/api/", "/twilio/"))
            or request.accept_mimetypes.best == "application/json"
        ):
            resp = jsonify(error=exc.name.lower().replace(" ", "_"), message=message)
        else:
            resp = Response(f"{code} {exc.name}: {message}\n", mimetype="text/plain")
        # Keep what the error itself says in headers (Allow on 405, Retry-After
        # on 429/503, WWW-Authenticate on 401); the body is ours.
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                resp.headers[name] = value
        return resp, code
