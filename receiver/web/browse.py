"""The browser: server-rendered pages over the index (login, lists, detail, deliveries).

Pages work without JavaScript (the Content-Security-Policy allows none) and
escape everything a sender wrote through Jinja's autoescaping.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.typing import ResponseReturnValue

from receiver.errors import StorageError
from receiver.index import MediaItem, MessageRecord
from receiver.index.queries import (
    MEDIA_STATES,
    MESSAGE_STATES,
    InvalidParameter,
    MessageFilter,
    list_messages,
    list_outbound,
    parse_cursor,
    parse_filter,
)
from receiver.index.records import PlayableCopy
from receiver.lifecycle import erase_message
from receiver.media.types import KINDS, RASTER_TYPES
from receiver.replies import human_size, templates_dir
from receiver.web import auth, security
from receiver.web.api import LIST_PARAMETERS, SID
from receiver.web.hooks import services
from receiver.web.serve_media import SAFE_INLINE_IMAGES

bp = Blueprint("browse", __name__)

PAGE_SIZE = 50
SENDER_PAGE_SIZE = 30


def register(app: Flask) -> None:
    """Install authentication and security headers, then the browser's routes."""
    auth.install(app)
    security.install(app)
    app.register_blueprint(bp)
    app.jinja_env.filters["size"] = human_size
    app.jinja_env.filters["when"] = when
    app.jinja_env.globals["KINDS"] = KINDS
    app.jinja_env.globals["STATES"] = (*MESSAGE_STATES, *MEDIA_STATES)


def when(value: datetime | None) -> str:
    """A timestamp as operators read it: 2024-05-01 13:45:07 UTC."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def media_view(row: MediaItem, sender: str, *, present: bool | None = None) -> dict[str, Any]:
    """What a page needs to show one media item (URLs, how to show it, its facts)."""
    facts = _json(row.facts, {})
    kind = row.kind or "other"
    detected = (row.detected_type or "").split(";", 1)[0].lower()
    number = row.idx + 1
    view: dict[str, Any] = {
        "row": row,
        "number": number,
        "kind": kind,
        "contact": facts.get("contact") if isinstance(facts.get("contact"), dict) else None,
        "contacts": [c for c in facts.get("contacts") or [] if isinstance(c, dict)],
        "mismatch": bool(facts.get("mismatch")),
        "scan": facts.get("scan"),
        "codecs": [str(c) for c in facts.get("codecs") or []],
        "duration": facts.get("duration_seconds"),
        "content_url": url_for("api.media_content", media_id=str(row.id)),
        "thumb_url": None,
        "show": "download",
        "alt": f"{kind.capitalize()} {number} from {sender}",
    }
    if row.state != "stored" or not row.storage_key:
        view["show"] = "unavailable"
        return view
    if present is False:
        view["show"] = "missing"
        return view
    if kind == "image":
        # The thumbnail route makes a thumbnail still queued, so a fresh message has no
        # broken pictures; the original stands in only where the browser shows it safely.
        if row.thumbnail_key or detected in RASTER_TYPES:
            view["thumb_url"] = url_for("api.media_thumbnail", media_id=str(row.id))
        elif detected in SAFE_INLINE_IMAGES:
            view["thumb_url"] = view["content_url"]
        view["show"] = "image" if view["thumb_url"] else "download"
    elif kind in ("video", "audio"):
        view["show"] = kind
        # The player's source until the message page knows the playable copy's state.
        view["src"] = view["content_url"]
        view["play_note"] = None
        if kind == "video" and row.thumbnail_key:
            view["thumb_url"] = url_for("api.media_thumbnail", media_id=str(row.id))
    elif kind == "contact" and view["contact"]:
        view["show"] = "contact"
        if not view["contacts"]:  # stored before every card was listed
            view["contacts"] = [view["contact"]]
    return view


def message_view(row: MessageRecord, *, check_files: bool = False) -> dict[str, Any]:
    """A message with its media views (and, on the detail page, whether files exist)."""
    store = services().store
    items = []
    for m in row.media:
        present = None
        if check_files and m.state == "stored" and m.storage_key:
            try:
                present = store.exists(m.storage_key)
            except (StorageError, ValueError):
                present = False
        items.append(media_view(m, row.from_addr, present=present))
    params = _params(row.params)
    return {"row": row, "media": items, "params": params, "channel_facts": _channel_facts(params)}


#: WhatsApp's extra webhook fields worth a line of their own on the message page:
#: https://www.twilio.com/docs/messaging/guides/webhook-request
CHANNEL_FACTS = (
    ("ProfileName", "Profile name"),
    ("WaId", "WhatsApp ID"),
    ("ButtonText", "Button text"),
    ("ButtonPayload", "Button payload"),
    ("OriginalRepliedMessageSid", "In reply to"),
)


def _channel_facts(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(label, value) of the channel fields present, in CHANNEL_FACTS order."""
    given = dict(params)
    return [(label, given[name]) for name, label in CHANNEL_FACTS if given.get(name)]


@bp.get("/")
def home() -> ResponseReturnValue:
    """The browser starts at the message list."""
    return redirect(url_for("browse.messages"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """The login form; the admin password opens a session."""
    target = auth.safe_next(request.values.get("next"))
    configured = bool(services().settings.admin_password)
    if request.method == "GET":
        if auth.session_ok():
            return redirect(target)
        return render_template("login.html", next=target, error=None, configured=configured)
    client = auth.client_ip()
    limiter = auth.throttle()
    wait = limiter.reserve(client, auth.LOGIN_ACCOUNT)
    if wait:
        page = render_template(
            "login.html",
            next=target,
            configured=configured,
            error=f"Too many failed logins. Try again in {wait} seconds.",
        )
        return Response(page, status=429, headers={"Retry-After": str(wait)})
    if not auth.password_ok(request.form.get("password", "")):
        # The failure was counted by reserve() before the check.
        error = "Wrong password." if configured else "No admin password is configured."
        return render_template("login.html", next=target, error=error, configured=configured), 401
    limiter.succeeded(client, auth.LOGIN_ACCOUNT)
    auth.start_session()
    security.rotate_csrf()
    return redirect(target, code=303)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session here and in every other copy of its cookie."""
    auth.end_session()
    flash("You are logged out.")
    return redirect(url_for("browse.login"), code=303)


@bp.get("/messages")
def messages() -> ResponseReturnValue:
    """Received messages, newest first, with thumbnails, filters and cursor pages."""
    raw = {name: request.args.get(name) for name in LIST_PARAMETERS}
    try:
        flt = parse_filter(raw)
        cursor = parse_cursor(request.args.get("cursor"))
    except InvalidParameter as exc:
        return render_template(
            "messages.html",
            items=[],
            form={k: v or "" for k, v in raw.items()},
            error=exc.message,
            next_url=None,
            newest_url=None,
            filtered=True,
        ), 400
    page = list_messages(services().index, flt, cursor=cursor, limit=PAGE_SIZE)
    given: dict[str, Any] = {k: v for k, v in raw.items() if v}
    next_url = None
    if page.next_cursor:
        next_url = url_for("browse.messages", **given, cursor=page.next_cursor.encode())
    return render_template(
        "messages.html",
        items=[message_view(r) for r in page.rows],
        form={k: v or "" for k, v in raw.items()},
        error=None,
        next_url=next_url,
        filtered=any(raw.values()),
        newest_url=url_for("browse.messages", **given) if cursor else None,
    )


@bp.get("/messages/<sid>")
def message(sid: str) -> ResponseReturnValue:
    """One message: every attachment with its facts, and the raw webhook parameters."""
    row = services().index.get_message(sid) if SID.match(sid) else None
    if row is None:
        return render_template("not_found.html", what="message", ident=sid), 404
    view = message_view(row, check_files=True)
    has_av = any(item["show"] in ("video", "audio") for item in view["media"])
    copies = services().index.playable_of(row.sid) if has_av else {}
    for item in view["media"]:
        item["seen_before"] = seen_before(row, item["row"])
        if item["show"] in ("video", "audio"):
            item.update(player_source(item["row"], copies.get(item["row"].id)))
    return render_template("message.html", m=view)


def player_source(item: MediaItem, copy: PlayableCopy | None) -> dict[str, Any]:
    """The player's source (the playable copy where there is one) and a note on its state."""
    copies = services().pipeline.playable
    playable_url = url_for("api.media_playable", media_id=str(item.id))
    if copy is None and copies.available:
        copies.queue(item.id)  # stored before copies existed
        copy = PlayableCopy(item.id, "pending", 0, item.updated_at)
    if copy is None:
        return {}  # no ffmpeg: the original, as the browser may or may not play it
    if copy.state in ("ready", "original"):
        return {"src": playable_url}
    if copy.state == "pending":
        return {
            "play_note": "A copy that every browser plays is being made; "
            "reload the page in a few seconds."
        }
    return {
        "play_note": f"No playable copy could be made ({copy.reason}): {copy.detail or ''}".rstrip(
            ": "
        )
    }


def seen_before(message: MessageRecord, item: MediaItem) -> dict[str, Any] | None:
    """Earlier copies of a stored image in other messages: how many, from whom, since when."""
    if item.kind != "image" or item.state != "stored":
        return None
    svc = services()
    similar = svc.index.similar_media(item.id)
    if similar is None:  # the thumbnail, and so the hash, is still queued
        svc.pipeline.derivatives.hash_now(item)
        similar = svc.index.similar_media(item.id)
    earlier = [
        other
        for other in similar or []
        if other.message_sid != message.sid and other.received_at <= message.received_at
    ]
    if not earlier:
        return None
    return {
        "count": len(earlier),
        "senders": sorted({other.from_addr for other in earlier}),
        "first": min(other.received_at for other in earlier),
        "list_url": url_for("browse.messages", similar_to=str(item.id)),
    }


@bp.post("/messages/<sid>/delete")
def delete_message(sid: str) -> ResponseReturnValue:
    """Erase a message and its stored files (CSRF-checked form)."""
    svc = services()
    row = svc.index.get_message(sid) if SID.match(sid) else None
    if row is None:
        return render_template("not_found.html", what="message", ident=sid), 404
    if request.form.get("confirm") != "yes":
        flash("Tick the confirmation box to delete the message and its files.")
        return redirect(url_for("browse.message", sid=sid), code=303)
    try:
        removed = erase_message(svc.index, svc.store, row)
    except StorageError:
        flash("The object store failed; nothing was deleted. Try again later.")
        return redirect(url_for("browse.message", sid=sid), code=303)
    flash(f"Deleted message {sid} and {removed} stored files.")
    return redirect(url_for("browse.messages"), code=303)


@bp.get("/senders/<path:address>")
def sender(address: str) -> ResponseReturnValue:
    """Every attachment received from one sender, newest first."""
    try:
        flt = parse_filter({"from": address})
        cursor = parse_cursor(request.args.get("cursor"))
    except InvalidParameter as exc:
        return render_template(
            "not_found.html", what="sender", ident=address, error=exc.message
        ), 400
    assert flt.from_addr is not None
    page = list_messages(services().index, flt, cursor=cursor, limit=SENDER_PAGE_SIZE)
    items = [message_view(r) for r in page.rows]
    sender_filter: dict[str, Any] = MessageFilter(flt.from_addr, flt.channel).as_params()
    next_url = None
    if page.next_cursor:
        next_url = url_for("browse.sender", address=address, cursor=page.next_cursor.encode())
    return render_template(
        "sender.html",
        address=address,
        items=items,
        next_url=next_url,
        messages_url=url_for("browse.messages", **sender_filter),
    )


@bp.get("/deliveries")
def deliveries() -> ResponseReturnValue:
    """Outbound messages and their delivery status."""
    try:
        cursor = parse_cursor(request.args.get("cursor"))
    except InvalidParameter as exc:
        return render_template("deliveries.html", rows=[], next_url=None, error=exc.message), 400
    page = list_outbound(services().index, cursor=cursor, limit=PAGE_SIZE)
    rows = [{**r, "media_count": len(_json(r.get("media"), []))} for r in page.rows]
    next_url = None
    if page.next_cursor:
        next_url = url_for("browse.deliveries", cursor=page.next_cursor.encode())
    return render_template("deliveries.html", rows=rows, next_url=next_url, error=None)


@bp.get("/static/app.css")
def stylesheet() -> Response:
    """The one hand-written stylesheet (public: the login page uses it)."""
    path = templates_dir() / "static" / "app.css"
    if not path.is_file():
        abort(404)
    resp = send_file(path, mimetype="text/css", max_age=3600, conditional=True)
    resp.headers["Cache-Control"] = "public, max-age=3600"
    return resp


def _params(raw: str | None) -> list[tuple[str, str]]:
    pairs = _json(raw, [])
    out = []
    for pair in pairs if isinstance(pairs, list) else []:
        if isinstance(pair, list | tuple) and len(pair) == 2:
            out.append((str(pair[0]), str(pair[1])))
    return out


def _json(raw: Any, default: Any) -> Any:
    if not raw:
        return default
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return default
