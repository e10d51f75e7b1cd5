"""Browser-playable copies of audio and video: their state, claims and results.

A row is written `pending` before the copy is queued, so the playable route
answers 202 from the first moment; the derivative thread claims it (a lease
on `updated_at`, so a crashed process's work is taken over by the sweep) and
finishes it as `ready`, `original` or `failed`. A host without ffmpeg records
`failed` with reason `no_ffmpeg` at once, and any process that has ffmpeg
takes such a copy over in its sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.events import NewEvent, write_events
from receiver.index.records import MediaItem, PlayableCopy
from receiver.index.schema import media, playable_media, utcnow
from receiver.index.serialize import media_event_data
from receiver.index.texts import select_media

__all__ = ["NO_FFMPEG", "PlayableIndex", "delete_playable_of"]

#: The reason of a copy that failed only because the host that stored its item had no
#: ffmpeg: a process that has it makes the copy later.
NO_FFMPEG = "no_ffmpeg"


def delete_playable_of(conn: Connection, message_sid: str) -> None:
    """Delete the playable rows of one message's media (SQLite does not cascade)."""
    ids = select(media.c.id).where(media.c.message_sid == message_sid)
    conn.execute(delete(playable_media).where(playable_media.c.media_id.in_(ids)))


def _write_playable_event(conn: Connection, media_id: int) -> int:
    """Write `media.playable` for an item whose copy just reached its final state."""
    row = conn.execute(select_media().where(media.c.id == media_id)).mappings().first()
    if row is None:
        return 0
    item = MediaItem.from_row(row)
    event = NewEvent("media.playable", media_event_data(item), item.message_sid)
    return write_events(conn, [event])


class PlayableIndex(IndexCore):
    """Reads and writes of `playable_media`."""

    @translate_db_errors
    def playable(self, media_id: int) -> PlayableCopy | None:
        """The playable copy record of an item, or None when none was ever queued."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(playable_media).where(playable_media.c.media_id == media_id))
                .mappings()
                .first()
            )
        return PlayableCopy.from_row(row) if row else None

    @translate_db_errors
    def playable_of(self, message_sid: str) -> dict[int, PlayableCopy]:
        """The playable copy records of one message's media, by media id."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(playable_media)
                .join(media, media.c.id == playable_media.c.media_id)
                .where(media.c.message_sid == message_sid)
            ).mappings()
            return {r["media_id"]: PlayableCopy.from_row(r) for r in rows}

    @translate_db_errors
    def queue_playable(self, media_id: int) -> bool:
        """Record a copy as `pending` (and claimed by the caller); False when a row exists."""
        stmt = (
            self._insert(playable_media)
            .values(media_id=media_id, state="pending", attempts=1, updated_at=utcnow())
            .on_conflict_do_nothing(index_elements=[playable_media.c.media_id])
            # RETURNING, since a driver may report rowcount -1 for ON CONFLICT.
            .returning(playable_media.c.media_id)
        )
        with self.begin() as conn:
            return conn.execute(stmt).first() is not None

    @translate_db_errors
    def claim_stale_playable(self, media_id: int, *, older_than: float, max_attempts: int) -> bool:
        """Take over a `pending` copy whose claim is over `older_than` seconds old.

        Out of attempts, it becomes `failed` (reason `gave_up`) instead, with its
        `media.playable` event.
        """
        now = utcnow()
        due = claimed = 0
        cutoff = now - timedelta(seconds=older_than)
        stale = (
            playable_media.c.media_id == media_id,
            playable_media.c.state == "pending",
            playable_media.c.updated_at < cutoff,
        )
        with self.begin() as conn:
            gave_up = conn.execute(
                update(playable_media)
                .where(*stale, playable_media.c.attempts >= max_attempts)
                .values(
                    state="failed",
                    reason="gave_up",
                    detail=f"no copy after {max_attempts} attempts (each ended without a result)",
                    updated_at=now,
                )
            ).rowcount
            if gave_up:
                due = _write_playable_event(conn, media_id)
            else:
                claimed = conn.execute(
                    update(playable_media)
                    .where(*stale)
                    .values(attempts=playable_media.c.attempts + 1, updated_at=now)
                ).rowcount
        self.notify_events(due)
        return not gave_up and bool(claimed)

    @translate_db_errors
    def claim_playable_without_ffmpeg(self, media_id: int) -> bool:
        """Take a copy that failed for want of ffmpeg back to `pending` (claimed by the
        caller, which has ffmpeg); False when it is not such a copy any more."""
        with self.begin() as conn:
            return bool(
                conn.execute(
                    update(playable_media)
                    .where(
                        playable_media.c.media_id == media_id,
                        playable_media.c.state == "failed",
                        playable_media.c.reason == NO_FFMPEG,
                    )
                    .values(
                        state="pending", reason=None, detail=None, attempts=1, updated_at=utcnow()
                    )
                ).rowcount
            )

    @translate_db_errors
    def finish_playable(
        self,
        media_id: int,
        *,
        state: str,
        storage_key: str | None = None,
        content_type: str | None = None,
        size_bytes: int | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record the outcome of a copy: ready, original or failed, with its
        `media.playable` event (the media object, `playable` now final) in the same
        transaction."""
        if state not in ("ready", "original", "failed"):
            raise ValueError(f"state: ready, original or failed, got {state!r}")
        due = 0
        with self.begin() as conn:
            conn.execute(
                update(playable_media)
                .where(playable_media.c.media_id == media_id)
                .values(
                    state=state,
                    storage_key=storage_key,
                    content_type=content_type,
                    size_bytes=size_bytes,
                    reason=reason,
                    detail=detail[:500] if detail else None,
                    updated_at=utcnow(),
                )
            )
            due = _write_playable_event(conn, media_id)
        self.notify_events(due)

    @translate_db_errors
    def missing_playable(
        self, limit: int, *, older_than: float, stale_after: float
    ) -> Sequence[MediaItem]:
        """Audio and video stored over `older_than` seconds ago with no copy row, with
        a `pending` one claimed over `stale_after` seconds ago (its process died), or
        with one that failed because the host that stored it had no ffmpeg."""
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than)
        stale = now - timedelta(seconds=stale_after)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(media)
                .outerjoin(playable_media, playable_media.c.media_id == media.c.id)
                .where(
                    media.c.state == "stored",
                    media.c.kind.in_(("audio", "video")),
                    media.c.updated_at < cutoff,
                    (playable_media.c.media_id.is_(None))
                    | (
                        (playable_media.c.state == "pending")
                        & (playable_media.c.updated_at < stale)
                    )
                    | (
                        (playable_media.c.state == "failed")
                        & (playable_media.c.reason == NO_FFMPEG)
                    ),
                )
                .limit(limit)
            ).mappings()
            return [MediaItem.from_row(r) for r in rows]
