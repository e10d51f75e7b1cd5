"""JSON API over the index and the store (thin views; queries live in receiver.index)."""

from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, abort, current_app, jsonify, request
from werkzeug.wrappers import Response as BaseResponse

from receiver.errors import StorageError
from receiver.index.queries import (
    InvalidParameter,
    list_messages,
    parse_cursor,
    parse_filter,
    parse_limit,
    parse_max_distance,
)
from receiver.index.records import MediaItem, PlayableCopy
from receiver.index.serialize import message_json, similar_json
from receiver.lifecycle import erase_message
from receiver.twilio import sids
from receiver.web import openapi, serve_media
from receiver.web.auth import api_auth
from receiver.web.hooks import services

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")

SID = sids.sid_pattern("SM", "MM", "IM")  # IM: Conversations messages
MEDIA_ID = re.compile(r"^[1-9][0-9]{0,9}$")
MAX_MEDIA_ID = 2**31 - 1
LIST_PARAMETERS = ("from", "kind", "state", "since", "until", "q", "similar_to")
LIST_QUERY = (*LIST_PARAMETERS, "cursor", "limit")
OWN_ENDPOINTS = frozenset(
    {
        "api.list_messages_view",
        "api.get_message",
        "api.delete_message",
        "api.media_content",
        "api.media_thumbnail",
        "api.openapi_document",
        "api.media_similar",
        "api.media_playable",
    }
)
SIMILAR_QUERY = ("max_distance",)
AV = ("audio", "video")


def valid_sid(sid: str) -> str:
    """404 for anything that is not a message SID (also stops path tricks)."""
    if not SID.fullmatch(sid):
        abort(404, description="no message with that SID")
    return sid


def valid_media_id(raw: str) -> int:
    """404 for anything that is not a media id the index can hold."""
    if not MEDIA_ID.match(raw) or int(raw) > MAX_MEDIA_ID:
        abort(404, description="no media item with that id")
    return int(raw)


@bp.before_request
def known_parameters_only() -> tuple[Response, int] | None:
    """A misspelt filter (`?form=...`) must not silently list everything: 400 instead."""
    allowed: tuple[str, ...] = ()
    if request.endpoint == "api.list_messages_view":
        allowed = LIST_QUERY
    elif request.endpoint == "api.media_similar":
        allowed = SIMILAR_QUERY
    unknown = sorted(name for name in request.args if name not in allowed)
    if not unknown or request.endpoint not in OWN_ENDPOINTS:
        return None
    return invalid(
        InvalidParameter(
            unknown[0],
            f"unknown query parameter {unknown[0]!r}; "
            + (f"this route takes {', '.join(allowed)}" if allowed else "this route takes none"),
        )
    )


def invalid(exc: InvalidParameter) -> tuple[Response, int]:
    """A 400 answer that names the parameter and the fix."""
    return jsonify(error="invalid_parameter", parameter=exc.parameter, message=exc.message), 400


@bp.get("/messages")
@api_auth
def list_messages_view() -> Response | tuple[Response, int]:
    """Messages newest first, filtered, one page at a time (keyset cursor)."""
    empty = [name for name in LIST_QUERY if request.args.get(name) == ""]
    if empty:
        return invalid(
            InvalidParameter(empty[0], f"{empty[0]} is empty; leave it out to not filter by it")
        )
    try:
        flt = parse_filter({name: request.args.get(name) for name in LIST_PARAMETERS})
        cursor = parse_cursor(request.args.get("cursor"))
        limit = parse_limit(request.args.get("limit"))
    except InvalidParameter as exc:
        return invalid(exc)
    page = list_messages(services().index, flt, cursor=cursor, limit=limit)
    return jsonify(
        messages=[message_json(row, include_params=False) for row in page.rows],
        next_cursor=page.next_cursor.encode() if page.next_cursor else None,
    )


@bp.get("/messages/<sid>")
@api_auth
def get_message(sid: str) -> Response:
    """One message with its media items."""
    message = services().index.get_message(valid_sid(sid))
    if message is None:
        abort(404, description="no message with that SID")
    return jsonify(message_json(message))


@bp.delete("/messages/<sid>")
@api_auth
def delete_message(sid: str) -> Response | tuple[Response, int]:
    """Erase a message: its stored files first, then its index rows."""
    svc = services()
    message = svc.index.get_message(valid_sid(sid))
    if message is None:
        abort(404, description="no message with that SID")
    try:
        removed = erase_message(svc.index, svc.store, message)
    except StorageError as exc:
        log.error("erasing %s failed in storage: %s", sid, exc)
        return jsonify(
            error="storage_unavailable",
            message="the object store failed; nothing was removed from the index; "
            "retry the deletion",
        ), 503
    return jsonify(deleted=sid, objects_deleted=removed)


@bp.get("/media/<media_id>/content")
@api_auth
def media_content(media_id: str) -> BaseResponse:
    """The stored original with safe headers (presigned redirect or Range-aware stream)."""
    return _serve(media_id, "content")


@bp.get("/media/<media_id>/thumbnail")
@api_auth
def media_thumbnail(media_id: str) -> BaseResponse:
    """The thumbnail of an image."""
    return _serve(media_id, "thumbnail")


@bp.get("/media/<media_id>/playable")
@api_auth
def media_playable(media_id: str) -> BaseResponse:
    """A copy of audio or video that browsers play; the original when it plays as it is."""
    svc = services()
    row = svc.index.get_media(valid_media_id(media_id))
    if row is None:
        abort(404, description="no media item with that id")
    try:
        copy = svc.index.playable(row.id)
        copies = svc.pipeline.playable
        if copy is None and copies.available and row.state == "stored" and row.kind in AV:
            # Stored before copies existed, or its queue died with a process: start it now.
            copies.queue(row.id)
            copy = PlayableCopy(row.id, "pending", 0, row.updated_at)
        chosen = serve_media.choose_playable(row, copy, svc.store)
        if isinstance(chosen, Response):
            return chosen
        return serve_media.send(svc.store, row, chosen)
    except StorageError as exc:
        return _storage_down("the playable copy of media", row.id, exc)


@bp.get("/media/<media_id>/similar")
@api_auth
def media_similar(media_id: str) -> Response | tuple[Response, int]:
    """Stored images whose perceptual hash is within `max_distance` bits, nearest first."""
    try:
        max_distance = parse_max_distance(request.args.get("max_distance"))
    except InvalidParameter as exc:
        return invalid(exc)
    svc = services()
    row = svc.index.get_media(valid_media_id(media_id))
    if row is None:
        abort(404, description="no media item with that id")
    found = svc.index.similar_media(row.id, max_distance=max_distance)
    if found is None and row.kind == "image" and row.state == "stored":
        # The hash comes with the thumbnail: make a queued one now, like the thumbnail route.
        svc.pipeline.derivatives.hash_now(row)
        found = svc.index.similar_media(row.id, max_distance=max_distance)
        if found is None:
            resp = serve_media.problem(
                202,
                "hash_pending",
                f"the perceptual hash of media {row.id} is not made yet; retry shortly",
            )
            resp.headers["Retry-After"] = "5"
            return resp
    if found is None:
        return serve_media.problem(
            404, "no_hash", f"media {row.id} is not a stored image, so it has no perceptual hash"
        ), 404
    return jsonify(similar_json(found))


@bp.get("/openapi.json")
@api_auth
def openapi_document() -> Response:
    """The OpenAPI 3 description of this API."""
    return jsonify(openapi.document(current_app))


def _serve(raw_id: str, which: str) -> BaseResponse:
    svc = services()
    row = svc.index.get_media(valid_media_id(raw_id))
    if row is None:
        abort(404, description="no media item with that id")
    try:
        if which == "thumbnail" and row.kind == "image":
            row = svc.pipeline.derivatives.make_now(row)
        elif which == "thumbnail" and _poster_coming(row):
            return serve_media.pending_thumbnail(row.id)
        chosen = serve_media.choose(row, which, svc.store)
        if isinstance(chosen, Response):
            return chosen
        return serve_media.send(svc.store, row, chosen)
    except StorageError as exc:
        return _storage_down("media", row.id, exc)


def _poster_coming(row: MediaItem) -> bool:
    """A stored video whose poster frame the copy thread has yet to make."""
    if row.kind != "video" or row.state != "stored" or row.thumbnail_key:
        return False
    if not services().pipeline.playable.available:
        return False
    copy = services().index.playable(row.id)
    return copy is None or copy.state == "pending"


def _storage_down(what: str, media_id: int, exc: StorageError) -> Response:
    log.error("serving %s %s failed in storage: %s", what, media_id, exc)
    return serve_media.problem(
        503, "storage_unavailable", "the object store is unavailable; retry later"
    )
