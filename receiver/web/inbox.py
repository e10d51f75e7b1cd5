"""The inbox: threads newest first, and one thread's messages in order (thin views).

Server-rendered and complete without JavaScript; `static/live.js` refreshes
them as `GET /api/stream` announces changes. Thread queries live in
`receiver.index.inbox`, unread counts in `receiver.index.livefeed`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Flask, abort, render_template, request, url_for
from flask.typing import ResponseReturnValue

from receiver.index.inbox import (
    ThreadKey,
    decode_cursor,
    encode_cursor,
    list_threads,
    thread_entries,
    thread_opted_out,
)
from receiver.index.livefeed import mark_seen, unread_counts
from receiver.index.queries import InvalidParameter
from receiver.index.records import MessageRecord
from receiver.twilio.errorcodes import describe
from receiver.web.auth import operator
from receiver.web.browse import message_view
from receiver.web.hooks import services

bp = Blueprint("inbox", __name__)
PAGE_SIZE = 30


def register(app: Flask) -> None:
    """Add the pages."""
    app.register_blueprint(bp)
    app.jinja_env.globals["describe"] = describe


@bp.get("/inbox")
def threads() -> ResponseReturnValue:
    """One row per thread, newest activity first, keyset-paged."""
    try:
        cursor = decode_cursor(request.args.get("cursor"))
    except InvalidParameter as exc:
        return render_template("inbox.html", rows=[], next_url=None, error=exc.message), 400
    index = services().index
    after = _live_after()
    page = list_threads(index, cursor=cursor, limit=PAGE_SIZE)
    unread = unread_counts(index, operator(), [t.key for t in page.rows])
    rows = [
        {"thread": t, "last": _entry(t.last), "unread": unread.get(t.key.encode(), 0)}
        for t in page.rows
    ]
    next_url = (
        url_for("inbox.threads", cursor=encode_cursor(page.next_cursor))
        if page.next_cursor
        else None
    )
    return render_template("inbox.html", rows=rows, next_url=next_url, error=None, live_after=after)


@bp.get("/inbox/<thread>")
def thread(thread: str) -> ResponseReturnValue:
    """Every inbound and outbound message of one thread, oldest first."""
    key = ThreadKey.decode(thread)
    if key is None:
        abort(404, description="no such thread")
    return render_thread(key)


def render_thread(key: ThreadKey, status: int = 200, **extra: Any) -> ResponseReturnValue:
    """The thread page; `extra` goes to the template (the reply box's result or draft)."""
    svc = services()
    # Read before the messages: a change in between is announced again, never lost.
    after = _live_after()
    entries = thread_entries(svc.index, key)
    if not entries:
        abort(404, description="no such thread")
    seen = [e.at for e in entries if e.inbound is not None]
    if seen:
        # Up to the newest message shown, not "now": one arriving meanwhile stays unread.
        mark_seen(svc.index, operator(), key, max(seen))
    keys = [e.outbound.get("idempotency_key") for e in entries if e.outbound]
    conversation = None
    if key.conversation:
        index = svc.conversations.index
        sids = [e.outbound["sid"] for e in entries if e.outbound and e.outbound.get("sid")]
        record = index.get(key.conversation)
        conversation = {
            "title": (record.friendly_name if record else None) or "Conversation",
            "participants": index.participants(key.conversation),
            "receipts": index.receipts(sids),
        }
    page = render_template(
        "thread.html",
        key=key,
        entries=[_entry(e.inbound or e.outbound) for e in entries],
        opted_out=thread_opted_out(svc.index, key),
        opted_out_reason=svc.inbox_replies.opted_out_reason(key),
        authors=svc.inbox_replies.replies.authors(keys),
        live_after=after,
        conversation=conversation,
        **extra,
    )
    return page, status


def _live_after() -> str:
    """Where the page's event stream starts: nothing between rendering and connecting is lost."""
    return services().live.feed.head().encode()


def _entry(item: MessageRecord | dict[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    if isinstance(item, MessageRecord):
        return {"direction": "inbound", **message_view(item)}
    return {"direction": "outbound", "row": item, "files": sent_files(item)}


#: How long a thread page's links to sent files stay valid.
SENT_LINK_TTL = 3600


def sent_files(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The files an outbound row sent, from its prepared media, each with a short-lived
    signed `/m/<token>` link when the prepared copy is stored here (a file sent into a
    conversation went to Twilio's MCS instead and is named only)."""
    try:
        items = json.loads(row.get("media") or "[]")
    except (TypeError, ValueError):
        return []
    links = services().links
    expires = int(time.time()) + SENT_LINK_TTL
    files = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not item.get("content_type"):
            continue  # reserved, not yet prepared: only its source is known
        key = item.get("key")
        token = links.sign_key(key, expires) if isinstance(key, str) else None
        source = str(item.get("source") or "")
        files.append(
            {
                "name": item.get("filename") or source.rsplit("/", 1)[-1] or "file",
                "kind": item.get("kind") or "file",
                "content_type": item.get("content_type"),
                "size": item.get("size"),
                "url": url_for("media_links.media_link", token=token) if token else None,
            }
        )
    return files
