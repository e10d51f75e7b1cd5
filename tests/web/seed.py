"""Test data for the browser and API tests.

`Seeder` writes index rows and stored objects the way the pipeline leaves
them (same keys, same columns), quickly and deterministically, for tests of
views. Tests of the whole path post real signed webhooks instead
(`tests.support.webhooks.WebhookPoster`), through the real pipeline.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from receiver.index.schema import media, messages, outbound_messages
from receiver.index.threads import rebuild as rebuild_threads
from receiver.storage.keys import derived_key, media_key
from tests.support import samples
from tests.support.webhooks import ACCOUNT_SID, new_sid

BASE_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# Built once: a photo-like JPEG takes milliseconds, and tests seed hundreds of them.
PHOTO = samples.jpeg()
THUMBNAIL = samples.jpeg(32, 24)


@dataclass
class Item:
    """One media item to seed."""

    kind: str = "image"
    detected_type: str = "image/jpeg"
    declared_type: str | None = None
    data: bytes | None = None
    state: str = "stored"
    reason: str | None = None
    thumbnail: bool = True
    contact: dict[str, Any] | None = None
    ext: str = "jpg"
    width: int | None = None
    height: int | None = None
    media_sid: str = field(default_factory=lambda: new_sid("ME"))


class Seeder:
    """Writes messages, media rows and objects into an app's index and store."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.svc = app.extensions["receiver"]
        self.count = 0

    def message(
        self,
        *,
        body: str = "hello",
        from_addr: str = "+15550001111",
        channel: str = "sms",
        items: list[Item] | None = None,
        received_at: datetime | None = None,
        state: str | None = None,
        message_sid: str | None = None,
        params: list[list[str]] | None = None,
    ) -> str:
        """Insert one message (and its media, with stored objects); return its SID."""
        self.count += 1
        msid = message_sid or new_sid("MM")
        at = received_at or BASE_TIME + timedelta(minutes=self.count)
        items = items or []
        row = {
            "sid": msid,
            "account_sid": ACCOUNT_SID,
            "direction": "inbound",
            "from_addr": from_addr,
            "from_channel": channel,
            "to_addr": "+15017122661",
            "to_channel": "sms",
            "body": body,
            "num_media": len(items),
            "params": json.dumps(
                params
                or [
                    ["MessageSid", msid],
                    ["From", from_addr],
                    ["Body", body],
                    ["NumMedia", str(len(items))],
                ]
            ),
            "state": state
            or ("complete" if all(i.state in ("stored", "rejected") for i in items) else "pending"),
            "received_at": at,
            "updated_at": at,
        }
        media_rows = []
        for idx, item in enumerate(items):
            data = (
                item.data if item.data is not None else (PHOTO if item.kind == "image" else b"data")
            )
            key = thumb = None
            if item.state == "stored":
                key = media_key(ACCOUNT_SID, msid, idx, item.media_sid, item.ext)
                self.svc.store.put_bytes(key, data, content_type=item.detected_type)
                if item.thumbnail and item.kind == "image":
                    thumb = derived_key(key, "thumb", "jpg")
                    self.svc.store.put_bytes(thumb, THUMBNAIL, content_type="image/jpeg")
            facts: dict[str, Any] = {
                "mismatch": bool(item.declared_type and item.declared_type != item.detected_type)
            }
            if item.contact:
                facts["contact"] = item.contact
            media_rows.append(
                {
                    "message_sid": msid,
                    "idx": idx,
                    "url": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{msid}/Media/{item.media_sid}",
                    "media_sid": item.media_sid,
                    "declared_type": item.declared_type or item.detected_type,
                    "detected_type": item.detected_type,
                    "kind": item.kind,
                    "size_bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "width": item.width,
                    "height": item.height,
                    "facts": json.dumps(facts),
                    "state": item.state,
                    "reason": item.reason,
                    "storage_key": key,
                    "thumbnail_key": thumb,
                    "attempts": 1,
                    "created_at": at,
                    "updated_at": at,
                }
            )
        with self.svc.index.engine.begin() as conn:
            conn.execute(insert(messages).values(**row))
            if media_rows:
                conn.execute(insert(media), media_rows)
            rebuild_threads(conn)  # rows written past the index's write path
        return msid

    def media_rows(self, message_sid: str) -> list[dict[str, Any]]:
        """The media rows of a seeded message."""
        return [asdict(item) for item in self.svc.index.media_of(message_sid)]

    def outbound(
        self, *, status: str = "delivered", error_code: int | None = None, body: str = "sent"
    ) -> None:
        """One outbound message row."""
        now = datetime.now(UTC)
        with self.svc.index.engine.begin() as conn:
            conn.execute(
                insert(outbound_messages).values(
                    sid=new_sid("SM"),
                    to_addr="+15558675310",
                    from_addr="+15017122661",
                    body=body,
                    media="[]",
                    status=status,
                    error_code=error_code,
                    error_message="Unreachable destination handset" if error_code else None,
                    created_at=now,
                    updated_at=now,
                )
            )
            rebuild_threads(conn)
