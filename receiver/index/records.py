"""Rows of the index as frozen values: what the index hands to the rest of the service.

Fields are the table columns of `receiver.index.schema` with the same names,
so `from_row` takes a result row as it comes. A new column needs a field
here too; `from_row` fails loudly until it has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class MediaItem:
    """One media item of an inbound message: where it came from, what it is, where it went."""

    id: int
    message_sid: str
    idx: int
    url: str
    state: str
    attempts: int
    created_at: datetime
    updated_at: datetime
    media_sid: str | None = None
    declared_type: str | None = None
    detected_type: str | None = None
    kind: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    animated: bool | None = None
    facts: str | None = None  # JSON text, see the schema
    reason: str | None = None
    detail: str | None = None
    storage_key: str | None = None
    thumbnail_key: str | None = None
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    remote_delete_state: str | None = None
    remote_deleted_at: datetime | None = None
    #: The message's AccountSid when the query that made the item knew it
    #: (not a media column): it spares a lookup before a fetch or a deletion.
    account_sid: str | None = None
    #: The text OCR read in the image (`media_text`, not a media column): None when
    #: not read, or when the query that made the item did not ask for it.
    text: str | None = None
    #: The playable copy's state and reason (`playable_media`, not media columns): None
    #: when no copy was queued, or when the query that made the item did not ask for it.
    playable_state: str | None = None
    playable_reason: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> MediaItem:
        """The item of one `media` row (optionally with the message's account_sid)."""
        return cls(**row)

    def object_keys(self) -> list[str]:
        """The object keys the index knows for this item (original, thumbnail)."""
        return [key for key in (self.storage_key, self.thumbnail_key) if key]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One inbound message with its media items in index order."""

    sid: str
    account_sid: str
    from_addr: str
    from_channel: str
    to_addr: str
    to_channel: str
    num_media: int
    params: str  # JSON list of [name, value] pairs as received
    state: str
    received_at: datetime
    updated_at: datetime
    messaging_service_sid: str | None = None
    direction: str = "inbound"
    body: str = ""
    num_segments: int | None = None
    opt_out_type: str | None = None
    keyword: str | None = None
    media: tuple[MediaItem, ...] = field(default=())

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], media: Iterable[MediaItem] = ()) -> MessageRecord:
        """The record of one `messages` row and its items."""
        return cls(**row, media=tuple(media))

    def object_keys(self) -> list[str]:
        """The object keys the index knows for this message (originals and thumbnails)."""
        return [key for item in self.media for key in item.object_keys()]


@dataclass(frozen=True, slots=True)
class SimilarMedia:
    """A stored image whose perceptual hash is within some Hamming distance of another's."""

    id: int
    message_sid: str
    from_addr: str
    received_at: datetime
    distance: int


@dataclass(frozen=True, slots=True)
class PlayableCopy:
    """The browser-playable copy of an audio or video item, or why there is none (yet)."""

    media_id: int
    #: pending, ready (the copy is at `storage_key`), original (plays as it is), failed
    state: str
    attempts: int
    updated_at: datetime
    storage_key: str | None = None
    content_type: str | None = None
    size_bytes: int | None = None
    reason: str | None = None
    detail: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> PlayableCopy:
        """The record of one `playable_media` row."""
        return cls(**row)
