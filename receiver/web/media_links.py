"""`GET /m/<token>`: a prepared outbound file for Twilio (or a link recipient) to fetch.

The token is HMAC-signed with RECEIVER_SECRET_KEY and expires; it is the only
credential, because Twilio fetches media without any. The answer carries the
file's exact Content-Type and a short `Content-Disposition: inline` filename
(Twilio shows it to recipients), and answers HEAD like GET without the body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from flask import Blueprint, Flask, Response, abort, current_app

from receiver.errors import StorageError
from receiver.outbound import MAX_FILENAME
from receiver.services import Services
from receiver.storage.base import ObjectInfo, content_disposition

bp = Blueprint("media_links", __name__)
T = TypeVar("T")

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
    key = _verified(links.verify, token)
    info = _stat(services, key)
    name = info.metadata.get("filename", "")
    disposition = None
    if FILENAME.match(name) and len(name) <= MAX_FILENAME:
        disposition = f'inline; filename="{name}"'
    return _send(services, key, info, disposition)


def _verified(verify: Callable[[str], T], token: str) -> T:
    """What a token names; 410 when it expired, 404 when it is not ours."""
    try:
        return verify(token)
    except ValueError as exc:
        if str(exc) == "expired":
            abort(410, description="this link has expired")
        abort(404, description="no such file")


def _stat(services: Services, key: str) -> ObjectInfo:
    try:
        return services.store.stat(key)
    except FileNotFoundError:
        abort(404, description="no such file")
    except StorageError:
        abort(503, description="storage is unavailable; try again shortly")


def _send(services: Services, key: str, info: ObjectInfo, disposition: str | None) -> Response:
    """Stream the object with its exact type and safe headers."""
    try:
        fp = services.store.open(key)
    except FileNotFoundError:
        abort(404, description="no such file")
    except StorageError:
        abort(503, description="storage is unavailable; try again shortly")
    headers = {
        "Content-Length": str(info.size),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=300",
    }
    if disposition:
        headers["Content-Disposition"] = disposition
    return Response(
        _stream(fp),
        status=200,
        headers=headers,
        mimetype=None,
        content_type=info.content_type,
        direct_passthrough=True,
    )


def _stored_media(services: Services, token: str) -> Response:
    """A stored inbound file named by an event's `content_url`, always as an attachment."""
    item = services.index.get_media(_verified(services.links.verify_media, token))
    if item is None or item.state != "stored" or not item.storage_key:
        abort(404, description="no such file")
    key = item.storage_key
    disposition = content_disposition(key.rsplit("/", 1)[-1])
    return _send(services, key, _stat(services, key), disposition)


def _stream(fp: BinaryIO) -> Iterator[bytes]:
    with fp:
        while chunk := fp.read(CHUNK):
            yield chunk


def register(app: Flask) -> None:
    """Add the route (the link signer is `Services.links`, keyed by RECEIVER_SECRET_KEY)."""
    app.register_blueprint(bp)
