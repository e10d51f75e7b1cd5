"""`GET /api/stream`: Server-Sent Events for live pages (a thin view over `StreamHub`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, abort, jsonify, request, send_file
from flask.typing import ResponseReturnValue

from receiver.httpfront import BufferedSocket
from receiver.index.inbox import ThreadKey
from receiver.index.live import LiveCursor
from receiver.replies import templates_dir
from receiver.streamhub import PREAMBLE, StreamHub, StreamsFull
from receiver.web.hooks import services

bp = Blueprint("stream", __name__)
#: Seconds a refused client should wait before it tries again.
RETRY_AFTER = 5


def register(app: Flask) -> None:
    """Add the stream and the page script."""
    app.register_blueprint(bp)


@bp.get("/api/stream")
def stream() -> ResponseReturnValue:
    """Server-Sent Events of new messages, media, thumbnails and statuses."""
    thread = request.args.get("thread") or None
    if thread is not None and ThreadKey.decode(thread) is None:
        return _refuse(400, "bad_request", "thread is not a thread key (<ours>~<customer>)")
    raw = request.headers.get("Last-Event-ID") or request.args.get("after")
    cursor = LiveCursor.decode(raw)
    if raw and cursor is None:
        return _refuse(400, "bad_request", "Last-Event-ID (or after) must be an event id")
    hub = services().live
    try:
        hub.reserve()
    except StreamsFull:
        resp = _refuse(503, "streams_full", "too many live streams; retry later")
        resp.headers["Retry-After"] = str(RETRY_AFTER)
        return resp
    sock = request.environ.get("gunicorn.socket")
    body: Any
    if isinstance(sock, BufferedSocket):
        chunked = request.environ.get("SERVER_PROTOCOL") != "HTTP/1.0"
        body = HandOff(hub, sock, cursor, thread, chunked=chunked)
    else:
        body = hub.iterate(cursor, thread)
    resp = Response(body, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    # nginx must pass each event on at once (deploy/nginx sets the same).
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


@bp.get("/static/live.js")
def script() -> Response:
    """The live pages' script (no build step: one hand-written file)."""
    path = templates_dir() / "static" / "live.js"
    if not path.is_file():
        abort(404)
    resp = send_file(path, mimetype="text/javascript", max_age=3600, conditional=True)
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp


class HandOff:
    """A response body that sends the first bytes, then gives the socket to the hub.

    Gunicorn writes the head and the preamble from the request thread; the
    hub writes everything after, and the thread is free again.
    """

    def __init__(
        self,
        hub: StreamHub,
        sock: BufferedSocket,
        cursor: LiveCursor | None,
        thread: str | None,
        *,
        chunked: bool,
    ) -> None:
        self.hub, self.sock, self.cursor, self.thread = hub, sock, cursor, thread
        self.chunked = chunked
        self.adopted = False

    def __iter__(self) -> Iterator[bytes]:
        yield PREAMBLE
        self.hub.adopt(self.sock.detach(), self.cursor, self.thread, chunked=self.chunked)
        self.adopted = True

    def close(self) -> None:
        """A stream that never reached the hub gives its place back."""
        if not self.adopted:
            self.adopted = True
            self.hub.release()


def _refuse(status: int, error: str, message: str) -> Response:
    resp = jsonify(error=error, message=message)
    resp.status_code = status
    return resp
