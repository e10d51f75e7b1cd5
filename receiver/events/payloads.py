"""Event bodies: `{"type", "timestamp", "data"}`, with signed expiring links to stored media.

`data` was written with the event (the API's message and media objects);
only the media links are added here, at delivery time, so each delivery
carries a link valid for `RECEIVER_EVENT_LINK_TTL` from when it was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from receiver.index.events import EventRecord
from receiver.storage.base import MAX_PRESIGN_SECONDS, ObjectStore

#: Signs a link to stored inbound item `media_id` valid until a Unix time.
MediaSigner = Callable[[int, int], str]


class Payloads:
    """Renders an event's JSON body once per delivery batch."""

    def __init__(
        self,
        store: ObjectStore,
        sign_media: MediaSigner,
        *,
        public_url: str,
        link_ttl: int,
    ) -> None:
        self.store = store
        self.sign_media = sign_media
        self.public_url = public_url.rstrip("/")
        self.link_ttl = link_ttl

    def body(self, event: EventRecord, *, now: float | None = None) -> bytes:
        """The exact bytes that are signed and sent."""
        expires_at = int((time.time() if now is None else now) + self.link_ttl)
        data = self._with_links(event.type, event.data, expires_at)
        doc = {
            "type": event.type,
            "timestamp": event.timestamp.isoformat().replace("+00:00", "Z"),
            "data": data,
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    def _with_links(self, kind: str, data: dict[str, Any], expires_at: int) -> dict[str, Any]:
        if kind.startswith("media."):
            return self._media(data, data.get("message_sid"), expires_at)
        if kind.startswith("message.") and isinstance(data.get("media"), list):
            sid = data.get("sid")
            return {**data, "media": [self._media(m, sid, expires_at) for m in data["media"]]}
        return data

    def _media(self, item: dict[str, Any], sid: Any, expires_at: int) -> dict[str, Any]:
        return {**item, "message_sid": sid, "content_url": self.content_url(item, expires_at)}

    def content_url(self, item: dict[str, Any], expires_at: int) -> str | None:
        """An absolute link to a stored item's bytes that needs no other credential.

        A presigned URL when the store makes them (S3), else our `/m/` link
        under RECEIVER_PUBLIC_URL; None while the item is not stored, or when
        neither exists (local storage without a public URL).
        """
        key, media_id = item.get("storage_key"), item.get("id")
        if item.get("state") != "stored" or not key or not isinstance(media_id, int):
            return None
        ttl = min(max(1, expires_at - int(time.time())), MAX_PRESIGN_SECONDS)
        presigned = self.store.presigned_url(key, expires=ttl)
        if presigned:
            return presigned
        if not self.public_url:
            return None
        return f"{self.public_url}/m/{self.sign_media(media_id, expires_at)}"
