"""Serving stored files to the browser: presigned redirects (S3) or Range-aware streaming.

The rules: the type sent is the detected one, never the sender's claim;
`nosniff` always; anything but safe raster images, audio and video is an
attachment; a file the index says is stored but the store lacks is a clear
404 with a reason (an inline placeholder picture where a browser wanted an
image), never a 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from flask import Response, jsonify, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from receiver.index.playable import NO_FFMPEG
from receiver.index.records import MediaItem, PlayableCopy
from receiver.storage.base import ObjectStore, check_content_type, content_disposition
from receiver.web.security import file_policy

log = logging.getLogger(__name__)

#: Images a browser may show inline: raster formats with no script or markup in them.
SAFE_INLINE_IMAGES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
PRESIGN_SECONDS = 60
CHUNK = 256 * 1024
CACHE = "private, max-age=300"
#: How long a client waits before asking again for a copy still being made.
PLAYABLE_RETRY_SECONDS = 3

_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")

MISSING_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="160" height="120" viewBox="0 0 160 120">'
    '<rect width="160" height="120" fill="#eee" stroke="#999"/>'
    '<text x="80" y="66" font-family="sans-serif" font-size="14" text-anchor="middle" '
    'fill="#555">file missing</text></svg>'
)


@dataclass(frozen=True)
class Served:
    """Which object to send for a media row, as what, and under which file name."""

    key: str
    content_type: str
    filename: str
    inline: bool


def inline_allowed(content_type: str) -> bool:
    """Safe raster images, audio and video are shown inline; everything else is downloaded."""
    base = content_type.split(";", 1)[0].strip().lower()
    return base in SAFE_INLINE_IMAGES or base.startswith(("audio/", "video/"))


def choose(row: MediaItem, which: str, store: ObjectStore) -> Served | Response:
    """The object for `which` ("content" or "thumbnail") of a media row, or a 404 answer."""
    media_id = row.id
    if row.state != "stored" or not row.storage_key:
        reason = row.reason or row.state
        return problem(
            404,
            "not_stored",
            f"media {media_id} is {row.state} ({reason}); there is no stored file",
            reason=reason,
        )
    if which == "thumbnail" and not row.thumbnail_key:
        if row.kind != "image":
            return problem(
                404, "no_thumbnail", f"media {media_id} has no thumbnail", reason="no_thumbnail"
            )
        if (row.detected_type or "") in SAFE_INLINE_IMAGES:
            # Busy or not decodable here: the stored original is a picture a browser shows.
            which = "content"
        else:
            return pending_thumbnail(media_id)
    if which == "thumbnail":
        key = row.thumbnail_key or ""
        ext = key.rsplit(".", 1)[-1]
        ctype = {
            "jpg": "image/jpeg",
            "jpeg": "image/jpeg",
            "png": "image/png",
            "webp": "image/webp",
        }
        content_type = ctype.get(ext, "")
        if not content_type:
            try:
                content_type = store.stat(key).content_type
            except FileNotFoundError:
                return missing(media_id, key)
    else:
        key = row.storage_key
        content_type = row.detected_type or "application/octet-stream"
    try:
        content_type = check_content_type(content_type)
    except ValueError:
        content_type = "application/octet-stream"
    ext = key.rsplit(".", 1)[-1] if "." in key.rsplit("/", 1)[-1] else "bin"
    suffix = "-thumbnail" if which == "thumbnail" else ""
    filename = f"{row.message_sid}-{row.idx}{suffix}.{ext}"
    return Served(key, content_type, filename, inline_allowed(content_type))


def pending_thumbnail(media_id: int) -> Response:
    """503 with Retry-After: the thumbnail (or a video's poster frame) is still queued."""
    resp = problem(
        503,
        "thumbnail_pending",
        f"the thumbnail of media {media_id} is not made yet; retry shortly",
        reason="thumbnail_pending",
    )
    resp.headers["Retry-After"] = "5"
    return resp


def choose_playable(
    row: MediaItem, copy: PlayableCopy | None, store: ObjectStore
) -> Served | Response:
    """What `/playable` sends: the copy when ready, the original when it plays as it is
    (or there is no ffmpeg to copy it), 202 while the copy is made, 422 when it failed."""
    if row.state == "stored" and row.kind not in ("audio", "video"):
        return problem(
            404,
            "not_audio_video",
            f"media {row.id} is {row.kind or 'other'}, not audio or video; it has no playable copy",
            reason="not_audio_video",
        )
    no_ffmpeg = copy is not None and copy.state == "failed" and copy.reason == NO_FFMPEG
    if row.state != "stored" or copy is None or copy.state == "original" or no_ffmpeg:
        return choose(row, "content", store)
    if copy.state == "pending":
        resp = problem(
            202,
            "playable_pending",
            f"a playable copy of media {row.id} is being made; retry shortly",
            reason="playable_pending",
        )
        resp.headers["Retry-After"] = str(PLAYABLE_RETRY_SECONDS)
        return resp
    if copy.state != "ready" or not copy.storage_key:
        reason = copy.reason or "failed"
        return problem(
            422,
            "playable_failed",
            f"no playable copy of media {row.id} could be made ({reason}): {copy.detail or ''}"
            "; the original is still at its content URL",
            reason=reason,
            detail=copy.detail,
        )
    ext = copy.storage_key.rsplit(".", 1)[-1]
    return Served(
        copy.storage_key,
        check_content_type(copy.content_type or "video/mp4"),
        f"{row.message_sid}-{row.idx}-playable.{ext}",
        inline=True,
    )


def send(store: ObjectStore, row: MediaItem, served: Served) -> BaseResponse:
    """A presigned redirect when the store has URLs, else the bytes (with Range support)."""
    disposition = "inline" if served.inline else "attachment"
    url = store.presigned_url(
        served.key,
        expires=PRESIGN_SECONDS,
        filename=served.filename,
        content_type=served.content_type,
        disposition=disposition,
    )
    if url is not None:
        # One HEAD request, so a lost object is a clear 404 here rather than an XML error there.
        if not store.exists(served.key):
            return missing(row.id, served.key)
        resp = redirect(url, code=302)
        resp.headers["Cache-Control"] = "no-store"
        return resp
    try:
        info = store.stat(served.key)
    except FileNotFoundError:
        return missing(row.id, served.key)
    size = info.size
    etag = info.etag
    headers = {
        "Content-Disposition": content_disposition(served.filename, disposition),
        "Accept-Ranges": "bytes",
        "Cache-Control": CACHE,
        "Content-Security-Policy": file_policy(),
    }
    if etag:
        headers["ETag"] = f'"{etag}"'
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            return Response(status=304, headers=headers)
    span = _requested_range(request.headers.get("Range"), size, etag)
    if isinstance(span, str):
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status=416, headers=headers)
    try:
        if span is None:
            fp = store.open(served.key)
            status, length = 200, size
        else:
            start, end = span
            fp = store.open_range(served.key, start, end)
            status, length = 206, end - start + 1
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    except FileNotFoundError:
        return missing(row.id, served.key)
    except ValueError:  # the object shrank between stat and open
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status=416, headers=headers)
    headers["Content-Length"] = str(length)
    resp = Response(
        _stream(fp, length),
        status=status,
        headers=headers,
        mimetype=None,
        content_type=served.content_type,
        direct_passthrough=True,
    )
    resp.call_on_close(fp.close)  # also when the body is never read (HEAD, client gone)
    return resp


def problem(status: int, error: str, message: str, **extra: Any) -> Response:
    """A JSON error answer with a machine-readable `error` (and `reason`)."""
    resp = jsonify(error=error, message=message, **extra)
    resp.status_code = status
    return resp


def missing(media_id: int, key: str) -> Response:
    """The index says stored, the store has no such object: a placeholder, not a 500."""
    log.error("media %s: object %s is missing from storage", media_id, key)
    wants_image = request.headers.get("Sec-Fetch-Dest") == "image" or (
        request.accept_mimetypes.best_match(["application/json", "image/svg+xml"])
        == "image/svg+xml"
        and "image/" in request.headers.get("Accept", "")
    )
    if wants_image:
        resp = Response(MISSING_SVG, status=404, content_type="image/svg+xml")
        resp.headers["Content-Security-Policy"] = file_policy()
        resp.headers["Cache-Control"] = "no-store"
        return resp
    return problem(
        404,
        "file_missing",
        f"media {media_id} is recorded as stored but its file is missing from storage",
        reason="file_missing",
    )


def _stream(fp: BinaryIO, length: int) -> Iterator[bytes]:
    try:
        left = length
        while left > 0:
            chunk = fp.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        fp.close()


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return etag in tags


def _requested_range(
    header: str | None, size: int, etag: str | None
) -> tuple[int, int] | str | None:
    """One byte range (inclusive), "unsatisfiable", or None for the whole file.

    Several ranges, or a malformed header, get the whole file (RFC 9110 lets
    a server ignore Range); If-Range with another version does too.
    """
    if not header or size <= 0:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and (etag is None or if_range.strip().strip('"') != etag):
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # malformed: a server may ignore it
    if start >= size:
        return "unsatisfiable"
    end = int(last) if last else size - 1
    return start, min(end, size - 1)
