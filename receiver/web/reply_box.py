"""The inbox reply box: the form post, its JSON API twin, the file preview (thin views).

Everything is done by `Services.inbox_replies` (receiver.outbound.inbox_reply),
which hands the reply to the same send core as `send` and `POST /api/messages`.
The form works without JavaScript; static/reply.js adds drag and drop and the
preview on file selection.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    request,
    send_file,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from receiver.errors import ConfigError, OutboundError, TwilioApiError
from receiver.index.inbox import ThreadKey
from receiver.index.replies import Operator, StoredFile
from receiver.outbound.inbox_reply import (
    InboxReplies,
    Reply,
    Upload,
    UploadTooLarge,
    type_label,
)
from receiver.outbound.request import MAX_BODY
from receiver.outbound.send import SendResult
from receiver.replies import human_size, templates_dir
from receiver.services import Services
from receiver.web import inbox
from receiver.web.auth import API_ACCOUNT, bearer_presented
from receiver.web.openapi import add_paths
from receiver.web.outbound_api import send_failure
from receiver.web.security import script_policy

bp = Blueprint("reply_box", __name__)

#: Room for the form fields and multipart framing around the files themselves.
FORM_OVERHEAD = 1 << 20
#: Reasons answered with a status of their own; the rest as `POST /api/messages` does.
STATUS_BY_REASON = {
    "no_such_thread": 404,
    "opted_out": 409,
    "not_our_number": 409,
    "in_flight": 409,
    "invalid_key": 400,
    "invalid_stored": 400,
    "invalid_request": 400,
}
_UPLOAD_ENDPOINTS = frozenset({"reply_box.reply", "reply_box.api_reply", "reply_box.preview"})
_MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def services() -> Services:
    """The services of the running app."""
    svc: Services = current_app.extensions["receiver"]
    return svc


def replies() -> InboxReplies:
    """The reply workflow of the running app."""
    return services().inbox_replies


@dataclass(frozen=True)
class ReplyBox:
    """What the reply form needs: a fresh one-time key and the thread's stored files."""

    key: str
    stored: list[StoredFile]
    max_body: int
    max_file: str


def reply_box(key: ThreadKey) -> ReplyBox:
    """The reply form's state for one thread (a template global: the page calls it once)."""
    settings = services().settings
    return ReplyBox(
        key=secrets.token_urlsafe(18),
        stored=replies().replies.stored_files(key),
        max_body=MAX_BODY,
        max_file=human_size(settings.max_media_bytes),
    )


def current_operator() -> Operator:
    """Who sends: the API token's caller, or the browser session's account."""
    if bearer_presented():
        return Operator(API_ACCOUNT, "API token")
    name = str(session.get("user") or "operator")
    return Operator(name, name)


# -- routes ------------------------------------------------------------------------------


@bp.post("/inbox/<thread>/reply")
def reply(thread: str) -> ResponseReturnValue:
    """The reply form: send, then back to the thread with the result (or the refusal)."""
    key = _thread(thread)
    try:
        result = replies().send(_reply(key))
    except (OutboundError, ConfigError, TwilioApiError) as exc:
        if isinstance(exc, OutboundError) and exc.reason == "in_flight":
            # The first of two submissions of this form is still on its way to Twilio.
            flash("This reply is already being sent; it will not be sent twice.")
            return redirect(url_for("inbox.thread", thread=key.encode(), _anchor="reply"), 303)
        body, status = _failure(exc)
        draft = request.form.get("body", "")
        return inbox.render_thread(key, status, reply_error=body["message"], draft=draft)
    flash(_sent_note(result))
    return redirect(url_for("inbox.thread", thread=key.encode(), _anchor="reply"), code=303)


@bp.post("/api/threads/<thread>/replies")
def api_reply(thread: str) -> tuple[Response, int]:
    """Send a reply into a thread (JSON or multipart with files); idempotent on its key."""
    key = _thread(thread)
    try:
        result = replies().send(_reply(key))
    except (OutboundError, ConfigError, TwilioApiError) as exc:
        body, status = _failure(exc)
        return jsonify(body), status
    out = result.to_json()
    out["operator"] = current_operator().name
    return jsonify(out), 200 if result.duplicate else 201


@bp.post("/api/threads/<thread>/replies/preview")
def preview(thread: str) -> tuple[Response, int]:
    """What sending these files would do ("photo.heic will be sent as JPEG, 1.2 MB")."""
    key = _thread(thread)
    try:
        plans = replies().preview(_reply(key, with_key=False))
    except (OutboundError, ConfigError, TwilioApiError) as exc:
        body, status = _failure(exc)
        return jsonify(body), status
    return jsonify(files=[p.to_json() for p in plans]), 200


@bp.get("/static/reply.js")
def script() -> Response:
    """The reply box's small enhancement: drag and drop, and the preview."""
    path = templates_dir() / "static" / "reply.js"
    if not path.is_file():
        abort(404)
    resp = send_file(path, mimetype="text/javascript", max_age=3600, conditional=True)
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp


# -- helpers -----------------------------------------------------------------------------


def _thread(raw: str) -> ThreadKey:
    key = ThreadKey.decode(raw)
    if key is None:
        abort(404, description="no such thread")
    return key


def _reply(key: ThreadKey, *, with_key: bool = True) -> Reply:
    """The reply the request asks for: form (multipart or urlencoded) or JSON."""
    data: Any = request.get_json(silent=True) if request.is_json else None
    if request.is_json and not isinstance(data, dict):
        raise OutboundError('send a JSON object such as {"body": "..."}', "invalid_request")
    if data is not None:
        body = data.get("body") or ""
        raw_stored = data.get("stored") or []
        reply_key = data.get("idempotency_key")
        if not isinstance(body, str) or not isinstance(raw_stored, list):
            raise OutboundError("body must be a string and stored a list of ids", "invalid_request")
        uploads: list[Upload] = []
    else:
        body = request.form.get("body", "")
        raw_stored = request.form.getlist("stored")
        reply_key = request.form.get("reply_key") or None
        uploads = [
            Upload(f.filename or "", f.stream) for f in request.files.getlist("files") if f.filename
        ]
    reply_key = request.headers.get("Idempotency-Key") or reply_key
    if reply_key is not None and not isinstance(reply_key, str):
        raise OutboundError("idempotency_key must be a string", "invalid_key")
    return Reply(
        thread=key,
        body=body.replace("\r\n", "\n"),
        uploads=tuple(uploads),
        stored=_ids(raw_stored),
        key=reply_key if with_key else None,
        operator=current_operator(),
    )


def _ids(raw: list[Any]) -> tuple[int, ...]:
    ids = []
    for item in raw:
        text = str(item)
        if not (_DIGITS.fullmatch(text) and 0 < int(text) <= _MAX_ID):
            raise OutboundError(f"stored file {text[:40]!r} is not a media id", "invalid_stored")
        ids.append(int(text))
    return tuple(dict.fromkeys(ids))


def _failure(exc: OutboundError | ConfigError | TwilioApiError) -> tuple[dict[str, Any], int]:
    body, status = send_failure(exc)
    if isinstance(exc, UploadTooLarge):
        status = 413
    elif isinstance(exc, OutboundError):
        status = STATUS_BY_REASON.get(exc.reason, status)
    return body, status


def _sent_note(result: SendResult) -> str:
    if result.duplicate:
        return f"This reply was already sent (status: {result.status}); it was not sent again."
    note = f"Reply sent (status: {result.status})."
    if result.prepared is not None and result.prepared.media:
        files = ", ".join(
            f"{type_label(m.content_type)} {human_size(m.size)}" for m in result.prepared.media
        )
        note += f" Files: {files}."
    return note


def _upload_limit() -> None:
    """Raise the request-size cap for the reply routes to the inbound message cap.

    It runs before the CSRF check, which reads the form (and so applies the caps).
    """
    if request.endpoint in _UPLOAD_ENDPOINTS:
        request.max_content_length = services().settings.max_message_bytes + FORM_OVERHEAD
        # Werkzeug's multipart decoder also holds its unparsed buffer (file bytes included)
        # to this size, and reads 64 KiB at a time: the app's 64 KiB would refuse files.
        request.max_form_memory_size = FORM_OVERHEAD


def _script_csp(resp: Response) -> Response:
    """The thread page runs the reply box's script (its own origin only)."""
    if request.endpoint in ("inbox.thread", "reply_box.reply") and resp.mimetype == "text/html":
        resp.headers["Content-Security-Policy"] = script_policy()
    return resp


def register(app: Flask) -> None:
    """Add the routes, the template global, and their OpenAPI description."""
    app.register_blueprint(bp)
    app.before_request_funcs.setdefault(None, []).insert(0, _upload_limit)
    app.after_request(_script_csp)
    app.jinja_env.globals["reply_box"] = reply_box
    add_paths(app, OPENAPI_PATHS, OPENAPI_SCHEMAS)


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_THREAD = {
    "name": "thread",
    "in": "path",
    "required": True,
    "description": "The thread key `<our number or MG...>~<customer>`, or a conversation's "
    "`CH...` SID, as /inbox links it.",
    "schema": {"type": "string", "maxLength": 520},
}
_FORM_SCHEMA = {"$ref": "#/components/schemas/ReplyForm"}
OPENAPI_SCHEMAS: dict[str, Any] = {
    "ReplyForm": {
        "type": "object",
        "properties": {
            "body": {"type": "string", "maxLength": MAX_BODY},
            "files": {
                "type": "array",
                "maxItems": 10,
                "items": {"type": "string", "format": "binary"},
            },
            "stored": {
                "type": "array",
                "description": "Media ids of stored files of this thread's inbound messages.",
                "items": {"type": "integer", "minimum": 1},
            },
            "reply_key": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
        },
    },
    "ReplyJson": {
        "type": "object",
        "properties": {
            "body": {"type": "string", "maxLength": MAX_BODY},
            "stored": {"type": "array", "items": {"type": "integer", "minimum": 1}},
            "idempotency_key": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
        },
    },
    "ReplyPreview": {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "content_type", "size", "summary"],
                    "properties": {
                        "name": {"type": "string"},
                        "content_type": {"type": "string"},
                        "size": {"type": "integer"},
                        "changes": {"type": "array", "items": {"type": "string"}},
                        "summary": {"type": "string"},
                    },
                },
            }
        },
    },
}
_REFUSALS: dict[str, Any] = {
    "400": {"description": "Malformed request or CSRF token missing.", "content": _ERROR},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "404": {"$ref": "#/components/responses/NotFound"},
    "409": {
        "description": "The customer (or, in a conversation, a member) opted out (replied "
        "STOP), our number is no longer the account's, or this key is being sent right now.",
        "content": _ERROR,
    },
    "413": {"description": "A file or the files over the inbound caps.", "content": _ERROR},
    "422": {"description": "Cannot be sent as asked; the message says why.", "content": _ERROR},
    "503": {"description": "Not configured for sending, or the index is down.", "content": _ERROR},
}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/threads/{thread}/replies": {
        "parameters": [_THREAD],
        "post": {
            "operationId": "replyToThread",
            "summary": "Reply into an inbox thread through the send core (same as the reply box)",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": _FORM_SCHEMA},
                    "application/json": {"schema": {"$ref": "#/components/schemas/ReplyJson"}},
                },
            },
            "responses": {
                "201": {
                    "description": "Sent.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/SendResult"}}
                    },
                },
                "200": {
                    "description": "Already sent under this key: not sent again.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/SendResult"}}
                    },
                },
                **_REFUSALS,
                "502": {"description": "Twilio failed.", "content": _ERROR},
            },
        },
    },
    "/api/threads/{thread}/replies/preview": {
        "parameters": [_THREAD],
        "post": {
            "operationId": "previewReply",
            "summary": "What the send core would do with these files (a dry run)",
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}},
            },
            "responses": {
                "200": {
                    "description": "One plan per file, in order.",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ReplyPreview"}
                        }
                    },
                },
                **_REFUSALS,
            },
        },
    },
}
