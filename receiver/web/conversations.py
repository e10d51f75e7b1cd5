"""Conversations in the API and the browser (thin views; queries live in receiver.index)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, render_template
from flask.typing import ResponseReturnValue

from receiver.index.serialize import conversation_json
from receiver.twilio import sids
from receiver.web.auth import api_auth
from receiver.web.browse import message_view
from receiver.web.hooks import services

bp = Blueprint("conversations", __name__)

#: Conversations listed by GET /api/conversations (most recently updated first).
LIST_LIMIT = 200


@bp.get("/api/conversations")
@api_auth
def list_conversations() -> Response:
    """Known conversations, most recently updated first (without their messages)."""
    rows = services().conversations.index.recent(LIST_LIMIT)
    return jsonify(conversations=[conversation_json(c) for c in rows])


@bp.get("/api/conversations/<sid>")
@api_auth
def get_conversation(sid: str) -> Response:
    """One conversation with its participants and its messages in `Index` order."""
    index = services().conversations.index
    conversation = index.get(sid) if sids.CONVERSATION.fullmatch(sid) else None
    if conversation is None:
        abort(404, description="no conversation with that SID")
    thread = index.thread(sid)
    receipts = index.receipts([m.sid for m in thread])
    return jsonify(conversation_json(conversation, index.participants(sid), thread, receipts))


@bp.get("/conversations/<sid>")
def conversation_page(sid: str) -> ResponseReturnValue:
    """One thread: each author's messages and media, and the participants."""
    index = services().conversations.index
    conversation = index.get(sid) if sids.CONVERSATION.fullmatch(sid) else None
    if conversation is None:
        return render_template("not_found.html", what="conversation", ident=sid), 404
    thread = index.thread(sid)
    return render_template(
        "conversation.html",
        conversation=conversation,
        participants=index.participants(sid),
        items=[message_view(m) for m in thread],
        receipts=index.receipts([m.sid for m in thread]),
    )
