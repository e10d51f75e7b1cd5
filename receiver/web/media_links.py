"""`GET /m/<token>`: a prepared outbound file for Twilio (or a link recipient) to fetch.

The token is HMAC-signed with RECEIVER_SECRET_KEY and expires; it is the only
credential, because Twilio fetches media without any. The answer carries the
file's exact Content-Type and a short `Content-Disposition: inline` filename
(Twilio shows it to recipients), and answers HEAD like GET without the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from flask import Blueprint, Flask, Response, abort, current_app

from receiver.errors import StorageError
from receiver.outbound import MAX_FILENAME
from receiver.services import Services
from receiver.storage.base import ObjectInfo, content_disposition

bp = Blueprint("media_links", __name__)

TOKEN = re.compile(r"^[0-9]{6}\.[0-9a-f]{16}\.[a-z0-9]{1,10}\.[0-9a-z]{1,13}\.[A-Za-z0-9_-]{22}$")
# A stored inbound item, linked from an event (`MediaLinks.sign_media`).
MEDIA_TOKEN = re.compile(r"^i[0-9a-z]{1,13}\.[0-9a-z]{1,13}\.[A-Za-z0-9_-]{22}$")
FILENAME = re.compile(r"^[A-Za-z0-9_-]{1,19}\.[a-z0-9]{1,10}$")
CHUNK = 256 * 1024


@bp.route("/m/<token>", methods=["GET", "HEAD"])
def media_link(token: str) -> Response:
    """Serve a signed, unexpired prepared file with its exact type; 404/410 otherwise."""
    services: Services = current_app.extensions["receiver"]
    links = services.links
    if MEDIA_TOKEN.match(token):
        return _stored_media(services, token)
    if not TOKEN.match(token):
        abort(404, description="no such file")
    try:
        key = links.verify(token)
    except ValueError as exc:
        if str(exc) == "expired":
            abort(410, description="this link has expired")
        abort(404, description="no such file")
    info, fp = _open(services, key)
    name = info.metadata.get("filename", "")
    headers = {
        "Content-Length": str(info.size),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=300",
    }
    if FILENAME.match(name) and len(name) <= MAX_FILENAME:
        headers["Content-Disposition"] = f'inline; filename="{name}"'
    return Response(
        _stream(fp),
        status=200,
        headers=headers,
        mimetype=None,
        content_type=info.content_type,
        direct_passthrough=True,
    )


def _open(services: Services, key: str) -> tuple[ObjectInfo, BinaryIO]:
    """The object's facts and an open reader; 404 when it is gone, 503 when storage is down."""
    try:
        return services.store.stat(key), services.store.open(key)
    except FileNotFoundError:
        abort(404, description="no such file")
    except StorageError:
        abort(503, description="storage is unavailable; try again shortly")


def _stored_media(services: Services, token: str) -> Response:
    """A stored inbound file named by an event's `content_url`, always as an attachment."""
    try:
        media_id = services.links.verify_media(token)
    except ValueError as exc:
        if str(exc) == "expired":
            abort(410, description="this link has expired")
        abort(404, description="no such file")
    item = services.index.get_media(media_id)
    if item is None or item.state != "stored" or not item.storage_key:
        abort(404, description="no such file")
    info, fp = _open(services, item.storage_key)
    name = item.storage_key.rsplit("/", 1)[-1]
    headers = {
        "Content-Length": str(info.size),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=300",
        "Content-Disposition": content_disposition(name),
    }
    return Response(
        _stream(fp),
        status=200,
        headers=headers,
        mimetype=None,
        content_type=info.content_type,
        direct_passthrough=True,
    )


def _stream(fp: BinaryIO) -> Iterator[bytes]:
    with fp:
        while chunk := fp.read(CHUNK):
            yield chunk


def register(app: Flask) -> None:
    """Add the route (the link signer is `Services.links`, keyed by RECEIVER_SECRET_KEY)."""
    app.register_blueprint(bp)
