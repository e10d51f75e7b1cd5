"""The public JSON shape of a message and of a media item (the contract's fields)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _loads(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def media_json(row: dict[str, Any]) -> dict[str, Any]:
    """One media row as the API shows it."""
    facts = _loads(row.get("facts"), {})
    out: dict[str, Any] = {
        "id": row["id"],
        "index": row["idx"],
        "media_sid": row.get("media_sid"),
        "url": row.get("url"),
        "declared_type": row.get("declared_type"),
        "detected_type": row.get("detected_type"),
        "kind": row.get("kind"),
        "size_bytes": row.get("size_bytes"),
        "sha256": row.get("sha256"),
        "width": row.get("width"),
        "height": row.get("height"),
        "frames": row.get("frames"),
        "animated": row.get("animated"),
        "type_mismatch": bool(facts.get("mismatch")),
        "state": row["state"],
        "reason": row.get("reason") if row["state"] != "stored" else None,
        "detail": row.get("detail") or None,
        "attempts": row.get("attempts", 0),
        "storage_key": row.get("storage_key"),
        "thumbnail_key": row.get("thumbnail_key"),
        "remote_delete_state": row.get("remote_delete_state"),
        "created_at": _iso(row.get("created_at")),
        "updated_at": _iso(row.get("updated_at")),
    }
    if facts.get("contact"):
        out["contact"] = facts["contact"]
    if facts.get("orientation"):
        out["orientation"] = facts["orientation"]
    return out


def message_json(row: dict[str, Any], *, include_params: bool = True) -> dict[str, Any]:
    """One message (with its media list when present) as the API shows it."""
    out: dict[str, Any] = {
        "sid": row["sid"],
        "account_sid": row["account_sid"],
        "messaging_service_sid": row.get("messaging_service_sid"),
        "direction": row.get("direction", "inbound"),
        "from": row["from_addr"],
        "to": row["to_addr"],
        "channel": row["from_channel"],
        "body": row.get("body") or "",
        "num_media": row["num_media"],
        "num_segments": row.get("num_segments"),
        "keyword": row.get("keyword"),
        "received_at": _iso(row.get("received_at")),
        "updated_at": _iso(row.get("updated_at")),
        "state": row["state"],
    }
    if include_params:
        out["params"] = [list(p) for p in _loads(row.get("params"), [])]
    if "media" in row:
        out["media"] = [media_json(m) for m in row["media"]]
    return out
