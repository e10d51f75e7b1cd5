"""Outbound JSON API: send (POST /api/messages), delivery figures, per-message status (thin views).

The workflow itself is `Services.outbound`, built with the other services.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request

from receiver.errors import ConfigError, OutboundError, TwilioApiError
from receiver.index.analytics import SERIES, InvalidRange
from receiver.outbound import Outbound, OutboundRequest
from receiver.services import Services
from receiver.twilio import sids
from receiver.web import analytics
from receiver.web.auth import api_auth
from receiver.web.openapi import add_paths

log = logging.getLogger(__name__)
bp = Blueprint("outbound_api", __name__, url_prefix="/api")
# The largest id either database stores (a signed 64-bit integer).
MAX_ID = 2**63 - 1

OUTBOUND_REF = re.compile(rf"{sids.MESSAGE.pattern}|[1-9][0-9]{{0,9}}")
MAX_LIST = 200
FORMAT_HELP = "format must be json or csv"


def services() -> Services:
    """The services of the running app."""
    svc: Services = current_app.extensions["receiver"]
    return svc


def outbound() -> Outbound:
    """The outbound workflow of the running app."""
    return services().outbound


@bp.post("/messages")
@api_auth
def send_message() -> tuple[Response, int]:
    """Send an outbound MMS (same as `mms-receiver send`); idempotent with Idempotency-Key."""
    data = request.get_json(silent=True)
    try:
        req = OutboundRequest.from_json(
            data, idempotency_key=request.headers.get("Idempotency-Key")
        )
    except ValueError as exc:
        return jsonify(error="invalid_request", message=str(exc)), 400
    dry_run = isinstance(data, dict) and data.get("dry_run") is True
    try:
        result = outbound().send(req, dry_run=dry_run)
    except (OutboundError, ConfigError, TwilioApiError) as exc:
        body, status = send_failure(exc)
        return jsonify(body), status
    return jsonify(result.to_json()), 200 if result.duplicate or dry_run else 201


def send_failure(exc: OutboundError | ConfigError | TwilioApiError) -> tuple[dict[str, Any], int]:
    """The JSON answer and status of a send that failed (the API's and the reply box's)."""
    if isinstance(exc, OutboundError):
        return {"error": exc.reason, "message": str(exc)}, 422
    if isinstance(exc, ConfigError):
        return {"error": "not_configured", "message": str(exc)}, 503
    client_side = 400 <= exc.status < 500 and exc.status not in (401, 403, 429)
    body = {"error": "twilio_error", "code": exc.code, "message": str(exc)}
    return {**body, "more_info": exc.more_info}, 422 if client_side else 502


@bp.get("/stats")
@api_auth
def stats() -> Response | tuple[Response, int]:
    """Delivery figures (`outbound`, by `days`) and the /analytics series of `since`..`until`."""
    raw = request.args.get("days", "")
    if raw and not (raw.isdigit() and 0 < int(raw) <= 3660):
        abort(400, description="days must be a whole number from 1 to 3660")
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        return jsonify(error="invalid_parameter", parameter="format", message=FORMAT_HELP), 400
    try:
        result = analytics.figures(request.args.get("since"), request.args.get("until"))
    except InvalidRange as exc:
        return jsonify(error="invalid_parameter", parameter=exc.parameter, message=exc.message), 400
    if fmt == "csv":
        name = f"stats-{result.range.since}-{result.range.until}.csv"
        return Response(
            analytics.to_csv(result),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return jsonify({**outbound().stats(days=int(raw) if raw else None), **result.as_json()})


@bp.get("/outbound")
@api_auth
def list_outbound() -> Response:
    """Recent outbound messages, newest first (`limit`, `before` = an id for the next page)."""
    limit, before = request.args.get("limit", "50"), request.args.get("before", "")
    if not limit.isdigit() or not 0 < int(limit) <= MAX_LIST:
        abort(400, description=f"limit must be a whole number from 1 to {MAX_LIST}")
    if before and not (before.isdigit() and 0 < int(before) <= MAX_ID):
        abort(400, description=f"before must be an outbound message id from 1 to {MAX_ID}")
    rows = services().outbound_index.recent(int(limit), before_id=int(before) if before else None)
    return jsonify(messages=[_json(r.as_dict()) for r in rows])


@bp.get("/outbound/<ref>")
@api_auth
def get_outbound(ref: str) -> Response:
    """One outbound message (by MessageSid or id) with every status event received."""
    if not OUTBOUND_REF.fullmatch(ref):
        abort(404, description="no outbound message with that SID or id")
    row = outbound().message(ref)
    if row is None:
        abort(404, description="no outbound message with that SID or id")
    return jsonify(_json(row))


def _json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["from"] = out.pop("from_addr", None)
    out["to"] = out.pop("to_addr", None)
    for name in ("created_at", "updated_at"):
        if out.get(name) is not None:
            out[name] = out[name].isoformat()
    for event in out.get("events", []):
        event["received_at"] = event["received_at"].isoformat()
    return out


def register(app: Flask) -> None:
    """Add the routes and their OpenAPI description."""
    app.register_blueprint(bp)
    add_paths(app, OPENAPI_PATHS, OPENAPI_SCHEMAS)


def _records(**types: str) -> dict[str, Any]:
    """The schema of a list of objects whose fields have these JSON types."""
    props = {name: {"type": kind} for name, kind in types.items()}
    return {"type": "array", "items": {"type": "object", "properties": props}}


def _json_body(schema: str) -> dict[str, Any]:
    """A JSON content entry whose schema is the component `schema`."""
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


_ERROR = _json_body("Error")
OPENAPI_SCHEMAS: dict[str, Any] = {
    "SendRequest": {
        "type": "object",
        "anyOf": [{"required": ["to"]}, {"required": ["conversation"]}],
        "additionalProperties": False,
        "properties": {
            "to": {"type": "string", "description": "E.164 recipient, e.g. +15558675310"},
            "from": {"type": "string", "description": "One of your Twilio numbers"},
            "messaging_service_sid": {
                "type": "string",
                "pattern": f"^{sids.MESSAGING_SERVICE.pattern}$",
            },
            "body": {"type": "string", "maxLength": 1600},
            "media": {
                "type": "array",
                "maxItems": 10,
                "items": {"type": "string", "format": "uri"},
            },
            "fallback": {"type": "string", "enum": ["link"]},
            "carrier_budget": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "validity_period": {"type": "integer", "minimum": 1, "maximum": 36000},
            "idempotency_key": {"type": "string", "maxLength": 100},
            "dry_run": {"type": "boolean"},
            "conversation": {
                "type": "string",
                "pattern": f"^{sids.CONVERSATION.pattern}$",
                "description": "Send into this Conversation (group MMS) instead of `to`: "
                "each file is uploaded to its Chat Service, one message per file",
            },
            "author": {"type": "string", "maxLength": 256, "description": "With conversation"},
        },
    },
    "SendResult": {
        "type": "object",
        "required": ["id", "sid", "status", "duplicate"],
        "properties": {
            "id": {"type": ["integer", "null"]},
            "sid": {"type": ["string", "null"]},
            "status": {"type": "string"},
            "idempotency_key": {"type": ["string", "null"]},
            "duplicate": {"type": "boolean"},
            "mode": {"type": "string", "enum": ["mms", "sms", "link"]},
            "body": {"type": "string"},
            "media": {"type": "array", "items": {"type": "object"}},
            "notes": {"type": "array", "items": {"type": "string"}},
            "error_code": {"type": ["integer", "null"]},
            "error_message": {"type": ["string", "null"]},
        },
    },
    "Stats": {
        "type": "object",
        "required": ["outbound"],
        "properties": {
            "outbound": {
                "type": "object",
                "required": ["by_status", "by_error_code", "by_day", "total"],
                "properties": {
                    "total": {"type": "integer"},
                    "by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "by_error_code": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                    },
                    "by_day": {"type": "object", "additionalProperties": {"type": "object"}},
                },
            },
            "range": {
                "type": "object",
                "description": "The UTC days of the series, both included, and their bucket.",
                "properties": {
                    "since": {"type": "string", "format": "date"},
                    "until": {"type": "string", "format": "date"},
                    "bucket": {"type": "string", "enum": ["hour", "day"]},
                },
            },
            "series": {
                "type": "array",
                "description": "One entry per hour (ranges up to 2 days) or day: the CSV rows.",
                "items": {
                    "type": "object",
                    "required": ["date", *SERIES],
                    "properties": {
                        "date": {"type": "string"},
                        **{name: {"type": "number"} for name in SERIES},
                    },
                },
            },
            "totals": {"type": "object", "additionalProperties": {"type": "number"}},
            "media_by_kind": {"type": "object", "additionalProperties": {"type": "integer"}},
            "media_by_size": {"type": "object", "additionalProperties": {"type": "integer"}},
            "funnel": {
                "type": "object",
                "description": "Outbound messages at or past each stage, by current status.",
                "additionalProperties": {"type": "integer"},
            },
            "error_codes": _records(code="integer", count="integer", description="string"),
            "cost_by_batch": _records(batch="string", messages="integer", cost="number"),
            "cost_unit": {"type": ["string", "null"]},
        },
    },
    "Outbound": {"type": "object", "required": ["id", "status", "to"]},
}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/messages": {
        "post": {
            "operationId": "sendMessage",
            "summary": "Send an MMS (or into a conversation) through the media core "
            "(checked, fixed, hosted or uploaded, sent)",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 100},
                }
            ],
            "requestBody": {
                "required": True,
                "content": _json_body("SendRequest"),
            },
            "responses": {
                "201": {
                    "description": "Sent.",
                    "content": _json_body("SendResult"),
                },
                "200": {
                    "description": "Already sent under this key, or a dry run.",
                    "content": _json_body("SendResult"),
                },
                "400": {"description": "Malformed request.", "content": _ERROR},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "422": {
                    "description": "Cannot be sent as asked; the message says why.",
                    "content": _ERROR,
                },
                "502": {"description": "Twilio failed.", "content": _ERROR},
                "503": {
                    "description": "Not configured for sending, or the index is down.",
                    "content": _ERROR,
                },
            },
        }
    },
    "/api/stats": {
        "get": {
            "operationId": "getStats",
            "summary": "Delivery figures, and the analytics series of a date range",
            "parameters": [
                {
                    "name": "days",
                    "in": "query",
                    "required": False,
                    "description": "Limits `outbound` to the last N days.",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 3660},
                },
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "description": "First UTC day of the series (default: 29 days before until).",
                    "schema": {"type": "string", "format": "date"},
                },
                {
                    "name": "until",
                    "in": "query",
                    "required": False,
                    "description": "Last UTC day of the series, included (default: today).",
                    "schema": {"type": "string", "format": "date"},
                },
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "description": "csv: the series only, a `date` column and one per figure.",
                    "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"},
                },
            ],
            "responses": {
                "200": {
                    "description": "Figures.",
                    "content": {
                        **_json_body("Stats"),
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "400": {"description": "Bad parameter.", "content": _ERROR},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        }
    },
    "/api/outbound": {
        "get": {
            "operationId": "listOutbound",
            "summary": "Recent outbound messages, newest first",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST},
                },
                {
                    "name": "before",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                },
            ],
            "responses": {
                "200": {
                    "description": "Messages.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": {"description": "Bad parameter.", "content": _ERROR},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        }
    },
    "/api/outbound/{ref}": {
        "parameters": [
            {
                "name": "ref",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "MessageSid or outbound id",
            }
        ],
        "get": {
            "operationId": "getOutbound",
            "summary": "One outbound message with its status events",
            "responses": {
                "200": {
                    "description": "The message.",
                    "content": _json_body("Outbound"),
                },
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "404": {"$ref": "#/components/responses/NotFound"},
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        },
    },
}
