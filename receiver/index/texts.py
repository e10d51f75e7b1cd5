"""Text read from stored images (OCR): recording it, and finding the images still unread.

Text search (`q`) reads the same table: `receiver.index.queries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import FromClause, Select, and_, case, exists, false, or_, select, update

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.records import MediaItem
from receiver.index.schema import media, media_hashes, media_text, playable_media, utcnow

__all__ = ["READING", "RETRYABLE", "MediaTexts", "ReadText", "select_media"]

#: The outcome of a row whose image is being read now (`claim_text`).
READING = "reading"
#: Outcomes `backfill --retry-failed` reads again (a later tesseract, more time, a fixed file).
RETRYABLE = ("timeout", "failed")

#: An item's `text`: what OCR read, or null when it was not read (OCR off, not yet,
#: over time or failed).
_TEXT = case((media_text.c.outcome == "done", media_text.c.text), else_=None).label("text")


def select_media() -> Select[Any]:
    """SELECT of `media` rows with their OCR `text` and playable copy's state and reason
    (MediaItem fields, not media columns): joined on primary keys, so a page of
    media costs no query per item."""
    return select(
        media,
        _TEXT,
        playable_media.c.state.label("playable_state"),
        playable_media.c.reason.label("playable_reason"),
    ).select_from(
        media.outerjoin(media_text, media_text.c.media_id == media.c.id).outerjoin(
            playable_media, playable_media.c.media_id == media.c.id
        )
    )


@dataclass(frozen=True)
class ReadText:
    """The OCR result of one item, as recorded."""

    media_id: int
    message_sid: str
    outcome: str  # done, timeout, failed (or READING while claimed)
    text: str
    languages: str
    detail: str | None = None
    seconds: float | None = None


class MediaTexts(IndexCore):
    """OCR text of stored images, and the images still waiting for a hash or a text."""

    @translate_db_errors
    def set_texts(self, results: Sequence[ReadText]) -> None:
        """Record (or replace) the OCR results of several items in one transaction."""
        if not results:
            return
        now = utcnow()
        rows = [
            {
                "media_id": r.media_id,
                "message_sid": r.message_sid,
                "outcome": r.outcome,
                "text": r.text,
                "languages": r.languages,
                "detail": r.detail,
                "seconds": r.seconds,
                "created_at": now,
            }
            for r in results
        ]
        stmt = self._insert(media_text)
        stmt = stmt.on_conflict_do_update(
            index_elements=[media_text.c.media_id],
            set_={name: stmt.excluded[name] for name in rows[0] if name != "media_id"},
        )
        # Only items still in the index: one erased meanwhile is simply not recorded.
        with self.begin() as conn:
            known = set(
                conn.execute(
                    select(media.c.id).where(media.c.id.in_([r["media_id"] for r in rows]))
                ).scalars()
            )
            rows = [r for r in rows if r["media_id"] in known]
            if rows:
                conn.execute(stmt, rows)

    @translate_db_errors
    def claim_text(
        self,
        media_id: int,
        message_sid: str,
        languages: str,
        *,
        stale_after: float,
        retry_failed: bool = False,
    ) -> bool:
        """Mark an item as being read by the caller; False when another reader has it, or
        it was read already. A claim older than `stale_after` seconds (its reader died)
        is taken over, and so, with `retry_failed`, is a `timeout` or `failed` result."""
        now = utcnow()
        insert = (
            self._insert(media_text)
            .values(
                media_id=media_id,
                message_sid=message_sid,
                outcome=READING,
                text="",
                languages=languages,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[media_text.c.media_id])
            .returning(media_text.c.media_id)
        )
        take_over = (
            update(media_text)
            .where(
                media_text.c.media_id == media_id,
                or_(
                    and_(
                        media_text.c.outcome == READING,
                        media_text.c.created_at < now - timedelta(seconds=stale_after),
                    ),
                    media_text.c.outcome.in_(RETRYABLE) if retry_failed else false(),
                ),
            )
            .values(outcome=READING, text="", detail=None, created_at=now, languages=languages)
        )
        with self.begin() as conn:
            if conn.execute(insert).first() is not None:
                return True
            return bool(conn.execute(take_over).rowcount)

    @translate_db_errors
    def text_of(self, media_id: int) -> ReadText | None:
        """The recorded OCR result of an item, or None when it was never read."""
        with self.engine.connect() as conn:
            row = conn.execute(select(media_text).where(media_text.c.media_id == media_id)).first()
        if row is None:
            return None
        return ReadText(
            row.media_id,
            row.message_sid,
            row.outcome,
            row.text,
            row.languages,
            row.detail,
            row.seconds,
        )

    @translate_db_errors
    def images_missing(
        self,
        *,
        after_id: int = 0,
        limit: int = 100,
        since: datetime | None = None,
        before: datetime | None = None,
        hashes: bool = True,
        texts: bool = False,
        stale_after: float = 600.0,
        retry_failed: bool = False,
    ) -> list[MediaItem]:
        """Stored images with no perceptual hash (`hashes`) or no OCR result (`texts`; with
        `retry_failed`, a `timeout` or `failed` one counts as none), by ascending id after
        `after_id`, created in [since, before).

        A caller walks them batch by batch, passing the last id back as `after_id`.
        """
        wanted = []
        if hashes:
            wanted.append(~exists().where(media_hashes.c.media_id == media.c.id))
        if texts:
            # Not read, or claimed by a reader that died (`claim_text`).
            stale = utcnow() - timedelta(seconds=stale_after)
            kept = media_text.c.outcome.not_in((READING, *(RETRYABLE if retry_failed else ())))
            wanted.append(
                ~exists().where(
                    media_text.c.media_id == media.c.id,
                    or_(
                        kept,
                        and_(media_text.c.outcome == READING, media_text.c.created_at >= stale),
                    ),
                )
            )
        if not wanted:
            return []
        conds = [media.c.id > after_id, media.c.kind == "image", media.c.state == "stored"]
        rows: FromClause = media
        if since is not None or before is not None:
            # A time range drives the query through the created_at index, materialised
            # first: left to itself the planner walks every stored image by state or kind.
            window = [media.c.created_at >= since] if since is not None else []
            if before is not None:
                window.append(media.c.created_at < before)
            recent = select(media.c.id).where(*window).cte("recent").prefix_with("MATERIALIZED")
            rows = recent.join(media, media.c.id == recent.c.id)
        stmt = (
            select(media)
            .select_from(rows)
            .where(*conds, or_(*wanted))
            .order_by(media.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [MediaItem.from_row(r) for r in conn.execute(stmt).mappings()]
