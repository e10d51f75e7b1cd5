"""The public JSON shape of a message and of a media item (the contract's fields)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from receiver.index.records import MediaItem, MessageRecord, SimilarMedia

if TYPE_CHECKING:
    # Only annotations: index.conversations imports messages, which imports this module.
    from receiver.index.conversations import (
        ConversationRecord,
        ParticipantRecord,
        ReceiptRecord,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _loads(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def media_json(item: MediaItem) -> dict[str, Any]:
    """One media item as the API shows it."""
    facts = _loads(item.facts, {})
    out: dict[str, Any] = {
        "id": item.id,
        "index": item.idx,
        "media_sid": item.media_sid,
        "url": item.url,
        "declared_type": item.declared_type,
        "detected_type": item.detected_type,
        "kind": item.kind,
        "size_bytes": item.size_bytes,
        "sha256": item.sha256,
        "width": item.width,
        "height": item.height,
        "frames": item.frames,
        "animated": item.animated,
        "type_mismatch": bool(facts.get("mismatch")),
        "state": item.state,
        "reason": item.reason if item.state != "stored" else None,
        "detail": item.detail or None,
        "attempts": item.attempts,
        "storage_key": item.storage_key,
        "thumbnail_key": item.thumbnail_key,
        "remote_delete_state": item.remote_delete_state,
        # clean, malware or unscanned; null when scanning is off (RECEIVER_CLAMD_URL unset).
        "scan": facts.get("scan"),
        # Text read in the image (RECEIVER_OCR); null when OCR is off or has not read it.
        "text": item.text,
        "playable": playable_json(item),
        "created_at": _iso(item.created_at),
        "updated_at": _iso(item.updated_at),
    }
    if facts.get("contact"):
        out["contact"] = facts["contact"]
        # Every card of the file; items stored before the list existed have only the first.
        out["contacts"] = facts.get("contacts") or [facts["contact"]]
    if facts.get("orientation"):
        out["orientation"] = facts["orientation"]
    if facts.get("container"):
        # ffprobe's facts (audio and video, when ffprobe is installed).
        for name in ("container", "codecs", "duration_seconds", "rotation"):
            out[name] = facts.get(name)
    return out


#: The public `playable` state of each recorded copy state (`original`: plays as it is).
_PLAYABLE_STATES = {
    "pending": "pending",
    "ready": "ready",
    "original": "not_needed",
    "failed": "failed",
}


def playable_json(item: MediaItem) -> dict[str, Any] | None:
    """Whether a browser-playable copy of an audio or video item is ready; None for other kinds.

    From the item alone (its copy's state is joined in by `select_media`), so a
    page of media costs no query per item. A stored item with no copy row yet
    is `pending`: the copy thread or the sweep queues it.
    """
    if item.kind not in ("audio", "video"):
        return None
    state, reason = "pending", None
    if item.state == "rejected" or (item.state == "failed" and item.next_attempt_at is None):
        # Nothing is stored (or no longer), so nothing plays: the item's reason says why.
        state, reason = "failed", item.reason or "not_stored"
    elif item.playable_state is not None:
        state = _PLAYABLE_STATES.get(item.playable_state, "failed")
        reason = item.playable_reason if state == "failed" else None
    return {"state": state, "url": f"/api/media/{item.id}/playable", "reason": reason}


def message_json(message: MessageRecord, *, include_params: bool = True) -> dict[str, Any]:
    """One message with its media list as the API shows it."""
    out: dict[str, Any] = {
        "sid": message.sid,
        "account_sid": message.account_sid,
        "messaging_service_sid": message.messaging_service_sid,
        "direction": message.direction,
        "from": message.from_addr,
        "to": message.to_addr,
        "channel": message.from_channel,
        "body": message.body or "",
        "num_media": message.num_media,
        "num_segments": message.num_segments,
        "keyword": message.keyword,
        "received_at": _iso(message.received_at),
        "updated_at": _iso(message.updated_at),
        "state": message.state,
    }
    # A Conversations message is stored from its author to its conversation.
    in_conversation = message.to_channel == "conversations"
    out["conversation_sid"] = message.to_addr if in_conversation else None
    out["author"] = message.from_addr if in_conversation else None
    if include_params:
        out["params"] = [list(p) for p in _loads(message.params, [])]
    out["media"] = [media_json(m) for m in message.media]
    return out


def conversation_json(
    conversation: ConversationRecord,
    participants: Sequence[ParticipantRecord] | None = None,
    thread: Sequence[MessageRecord] | None = None,
    receipts: Mapping[str, Sequence[ReceiptRecord]] | None = None,
) -> dict[str, Any]:
    """A conversation as the API shows it; with participants and messages when given, each
    message with its per-participant delivery `receipts`."""
    out: dict[str, Any] = {
        "sid": conversation.sid,
        "account_sid": conversation.account_sid,
        "chat_service_sid": conversation.chat_service_sid,
        "friendly_name": conversation.friendly_name,
        "unique_name": conversation.unique_name,
        "state": conversation.state,
        "removed": conversation.removed,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
    }
    if participants is not None:
        out["participants"] = [
            {
                "sid": p.sid,
                "address": p.address,
                "projected_address": p.projected_address,
                "identity": p.identity,
            }
            for p in participants
        ]
    if thread is not None:
        out["messages"] = [
            {
                **message_json(m, include_params=False),
                "receipts": [receipt_json(r) for r in (receipts or {}).get(m.sid, ())],
            }
            for m in thread
        ]
    return out


def receipt_json(receipt: ReceiptRecord) -> dict[str, Any]:
    """One participant's delivery receipt of a conversation message."""
    return {
        "sid": receipt.sid,
        "participant_sid": receipt.participant_sid,
        "address": receipt.address,
        "status": receipt.status,
        "error_code": receipt.error_code,
        "channel_message_sid": receipt.channel_message_sid,
        "updated_at": _iso(receipt.updated_at),
    }


def similar_json(items: list[SimilarMedia]) -> dict[str, Any]:
    """The answer of GET /api/media/<id>/similar: the close images, nearest first."""
    return {
        "media": [
            {
                "id": item.id,
                "message_sid": item.message_sid,
                "from": item.from_addr,
                "received_at": _iso(item.received_at),
                "distance": item.distance,
            }
            for item in items
        ]
    }


_MESSAGE_FIELDS = frozenset(f.name for f in fields(MessageRecord)) - {"media"}


def message_event_data(values: Mapping[Any, Any], items: Sequence[MediaItem]) -> dict[str, Any]:
    """The `data` of a message event: the API's message object, without the raw params."""
    row = {
        "state": "pending",
        "params": "[]",
        "num_media": len(items),
        **{k: v for k, v in values.items() if k in _MESSAGE_FIELDS},
    }
    return message_json(MessageRecord.from_row(row, items), include_params=False)


def media_event_data(item: MediaItem) -> dict[str, Any]:
    """The `data` of a media event: the API's media object with its message's SID."""
    return {**media_json(item), "message_sid": item.message_sid}
