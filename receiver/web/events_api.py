"""`/api/endpoints*` and `/api/events*`: event endpoints and the event log as JSON (thin views)."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, abort, jsonify, request

from receiver.index.events import EVENT_TYPES
from receiver.lifecycle import parse_moment
from receiver.web.auth import api_auth
from receiver.web.hooks import services

bp = Blueprint("events_api", __name__, url_prefix="/api")

ENDPOINT_ID = re.compile(r"^ep_[a-z0-9_]{1,40}$")
EVENT_ID = re.compile(r"^evt_[0-9a-f]{26}$")
STATES = ("pending", "delivered", "failed", "abandoned")
MAX_LIMIT = 200


def _bad(message: str, parameter: str | None = None) -> tuple[Response, int]:
    named = {"parameter": parameter} if parameter else {}
    return jsonify(error="invalid_parameter", message=message, **named), 400


def _endpoint_id(raw: str) -> str:
    if not ENDPOINT_ID.match(raw) or services().index.get_endpoint(raw) is None:
        abort(404, description="no endpoint with that id")
    return raw


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="send a JSON object with Content-Type: application/json")
    return body


@bp.get("/endpoints")
@api_auth
def list_endpoints() -> Response:
    """Every endpoint with its pending backlog (secrets are never shown again)."""
    index = services().index
    backlog = index.event_figures().backlog_by_endpoint
    return jsonify(
        endpoints=[{**e.public(), "backlog": backlog.get(e.id, 0)} for e in index.list_endpoints()]
    )


@bp.post("/endpoints")
@api_auth
def add_endpoint() -> tuple[Response, int]:
    """Create an endpoint; the answer holds its `whsec_` secret, shown this once."""
    body = _json_body()
    url, types, description = body.get("url"), body.get("events") or [], body.get("description")
    if not isinstance(url, str) or not url:
        return _bad("url is required: an http(s):// URL or sqs://<queue name>", "url")
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        return _bad("events is a list of event types", "events")
    if description is not None and not isinstance(description, str):
        return _bad("description is text", "description")
    try:
        endpoint, secret = services().events.add_endpoint(
            url, types, description or "", source="api"
        )
    except ValueError as exc:
        return _bad(str(exc), "events" if "event type" in str(exc) else "url")
    shown = endpoint.public()
    return jsonify(
        id=endpoint.id,
        url=endpoint.url,
        events=shown["events"],
        secret=secret,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        description=endpoint.description,
    ), 201


@bp.delete("/endpoints/<endpoint_id>")
@api_auth
def remove_endpoint(endpoint_id: str) -> Response:
    """Remove an endpoint; nothing more is delivered to it."""
    services().index.remove_endpoint(_endpoint_id(endpoint_id))
    return jsonify(deleted=endpoint_id)


@bp.post("/endpoints/<endpoint_id>/test")
@api_auth
def test_endpoint(endpoint_id: str) -> tuple[Response, int]:
    """Queue an `endpoint.test` event for this endpoint only."""
    event_id = services().events.test(_endpoint_id(endpoint_id))
    return jsonify(event_id=event_id), 202


@bp.post("/endpoints/<endpoint_id>/replay")
@api_auth
def replay(endpoint_id: str) -> tuple[Response, int]:
    """Deliver `{"event_id": ...}` or every event `{"since": "24h"}` again (re-enables it)."""
    endpoint_id = _endpoint_id(endpoint_id)
    body = _json_body()
    event_id, since = body.get("event_id"), body.get("since")
    if (event_id is None) == (since is None):
        return _bad('send {"event_id": "evt_..."} or {"since": "24h"}')
    if event_id is not None:
        if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
            return _bad("event_id is an event id (evt_...)", "event_id")
        n = services().events.replay(endpoint_id, event_id=event_id)
        if n == 0:
            abort(404, description="no event with that id")
    else:
        try:
            moment = parse_moment(str(since))
        except ValueError as exc:
            return _bad(str(exc), "since")
        n = services().events.replay(endpoint_id, since=moment)
    return jsonify(endpoint_id=endpoint_id, replayed=n), 202


@bp.get("/events")
@api_auth
def list_events() -> Response | tuple[Response, int]:
    """Events newest first with their deliveries; filter by `type` and delivery `state`."""
    kind, state = request.args.get("type"), request.args.get("state")
    cursor = request.args.get("cursor")
    if kind is not None and kind not in EVENT_TYPES:
        return _bad(f"type is one of {', '.join(EVENT_TYPES)}", "type")
    if state is not None and state not in STATES:
        return _bad(f"state is one of {', '.join(STATES)}", "state")
    if cursor is not None and not EVENT_ID.match(cursor):
        return _bad("cursor is the next_cursor of the previous page", "cursor")
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        return _bad("limit is a whole number", "limit")
    if not 1 <= limit <= MAX_LIMIT:
        return _bad(f"limit is between 1 and {MAX_LIMIT}", "limit")
    found = services().index.list_events(before=cursor, limit=limit, type=kind, state=state)
    return jsonify(
        events=[e.as_dict() for e in found],
        next_cursor=found[-1].id if len(found) == limit else None,
    )


@bp.get("/events/<event_id>")
@api_auth
def get_event(event_id: str) -> Response:
    """One event with every delivery attempt (time, status, first 1 KB of the answer, error)."""
    event = services().index.get_event(event_id) if EVENT_ID.match(event_id) else None
    if event is None:
        abort(404, description="no event with that id")
    return jsonify(event.as_dict())


def register(app: Flask) -> None:
    """Add the routes."""
    app.register_blueprint(bp)
