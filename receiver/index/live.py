"""Live updates: the rows behind `GET /api/stream` (read by `livefeed.LiveFeed`).

`write_live` runs inside the transaction of the change (called by
`events.write_events`, and by `set_thumbnails` for thumbnails, which are not
webhook events), so a page never hears of a change that was rolled back.
Rows are small (type, SIDs, media id, status); everything else is joined in
when a server process reads them, once per poll for all of its streams.

Order: rows are read in `id` order. On SQLite writers are serialised, so
`id` order is commit order. On PostgreSQL an id is drawn before its
transaction commits, so a later id can become visible first: the hub
delivers ids without a gap at once and waits a little for a gap to fill
(`StreamHub`).
See docs/design.md ("Live updates").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.engine import Connection

from receiver.index.schema import live_events, media

#: Event types a live page shows (of those written to the events outbox).
LIVE_TYPES = frozenset(
    {"message.received", "media.stored", "media.rejected", "media.failed", "message.status"}
)
#: A thumbnail was recorded: not a webhook event type, only a live one.
THUMBNAIL = "media.thumbnail"
#: How long rows are kept: a client away longer is told to reload (`reset`).
RETENTION = timedelta(hours=1)


@dataclass(frozen=True, order=True)
class LiveCursor:
    """A position in the live feed: the id of the last row read (0: before the first)."""

    id: int = 0

    def encode(self) -> str:
        """The SSE `id:` of the row at this position."""
        return str(self.id)

    @classmethod
    def decode(cls, raw: str | None) -> LiveCursor | None:
        """The cursor of a `Last-Event-ID`, or None when it is absent or malformed."""
        text = (raw or "").strip()
        return cls(int(text)) if re.fullmatch(r"[0-9]{1,18}", text) else None


@dataclass(frozen=True)
class LiveEvent:
    """One change as a live page hears of it."""

    cursor: LiveCursor
    type: str
    message_sid: str | None
    thread: str | None
    direction: str | None
    media_id: int | None = None
    thumbnail: bool = False
    media_state: str | None = None
    status: str | None = None
    error_code: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON `data:` of the event (only the fields that apply)."""
        out: dict[str, Any] = {
            "id": self.cursor.encode(),
            "type": self.type,
            "message_sid": self.message_sid,
            "thread": self.thread,
            "direction": self.direction,
        }
        if self.media_id is not None:
            out.update(media_id=self.media_id, state=self.media_state, thumbnail=self.thumbnail)
        if self.status is not None:
            out.update(status=self.status, error_code=self.error_code)
        return out

    def frame(self) -> bytes:
        """The event in Server-Sent Events form."""
        data = json.dumps(self.as_dict(), separators=(",", ":"))
        # No `event:` line: a browser's `onmessage` gets every type, and `type` is in the data.
        return f"id: {self.cursor.encode()}\ndata: {data}\n\n".encode()


def live_rows(
    changes: Iterable[tuple[str, str | None, Mapping[Any, Any]]], now: datetime
) -> list[dict[str, Any]]:
    """Rows for the changes (type, message SID, event data) that a live page shows."""
    rows = []
    for type_, sid, data in changes:
        if type_ not in LIVE_TYPES and type_ != THUMBNAIL:
            continue
        is_status = type_ == "message.status"
        rows.append(
            {
                "type": type_,
                "message_sid": sid or data.get("sid") or data.get("message_sid"),
                "media_id": None if is_status else data.get("id"),
                "status": data.get("status") if is_status else None,
                "created_at": now,
            }
        )
    return rows


_INSERT = live_events.insert()


def write_live(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert live rows in `conn`'s transaction (one statement)."""
    if rows:
        conn.execute(_INSERT, list(rows))


def delete_live_of(conn: Connection, message_sid: str) -> None:
    """Erase a message's live rows with the message (called by `delete_events_of`, before
    the media rows go: a thumbnail row names only its media item)."""
    items = select(media.c.id).where(media.c.message_sid == message_sid)
    conn.execute(
        delete(live_events).where(
            or_(live_events.c.message_sid == message_sid, live_events.c.media_id.in_(items))
        )
    )
