"""The playable-copy queue: poster frames and browser-playable copies of stored audio and video.

Made after the webhook is answered, on a thread of their own (a transcode
takes seconds; thumbnails of photos must not wait behind it), each ffmpeg run
bounded by receiver.media.playable's limits. The thread first records the
item `pending` (the insert is the claim: one process makes each copy), so
`GET /api/media/<id>/playable` answers 202 until it is done; before that
row exists, the route queues the item itself. A process that dies leaves
the row to the sweep (`remake_missing`). Design: docs/design.md ("Playable
copies").
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from receiver.inbound.pools import ForkSafePool, lower_thread_priority
from receiver.index import MediaIndex
from receiver.index.playable import NO_FFMPEG
from receiver.index.records import MediaItem
from receiver.media.playable import (
    Copy,
    Failed,
    Limits,
    ffmpeg_path,
    make_copy,
    make_poster,
    plan,
    workdir,
)
from receiver.storage.base import ObjectStore
from receiver.storage.keys import derived_key

__all__ = ["PlayableCopies"]

log = logging.getLogger(__name__)

#: Copies made at once in one process: one, since ffmpeg itself runs two threads.
THREADS = 1
#: A `pending` row claimed longer ago than this (seconds) is taken over by the sweep...
STALE_AFTER = 600.0
#: ...at most this many times; then it is `failed` with reason `gave_up`.
MAX_ATTEMPTS = 3
_COPY_CHUNK = 1 << 20


class PlayableCopies:
    """Makes poster frames and playable copies of stored audio and video on one thread.

    With no ffmpeg on PATH it makes nothing and records each copy `failed` with
    reason `no_ffmpeg`; the sweep of a process that has ffmpeg makes those later.
    """

    def __init__(
        self, index: MediaIndex, store: ObjectStore, *, limits: Limits | None = None
    ) -> None:
        self.index = index
        self.store = store
        self.limits = limits or Limits()
        self.stale_after = max(STALE_AFTER, self.limits.timeout * 3)
        self.available = ffmpeg_path() is not None
        self._pool = ForkSafePool(THREADS, name="playable", initializer=lower_thread_priority)

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The copy thread's executor in this process."""
        return self._pool.executor

    def queue(self, media_id: int) -> Future[None] | None:
        """Make the poster and copy of a stored audio or video item on the copy thread.

        The `pending` row is written there too, off the answer path; an item
        recorded before (another delivery, another process) is left alone.
        """
        if not self.available:
            self._record_no_ffmpeg(media_id)
            return None
        return self._pool.executor.submit(self._start, media_id)

    def _record_no_ffmpeg(self, media_id: int) -> None:
        """Say why this host makes no copy, instead of leaving the item `pending`."""
        try:
            if self.index.queue_playable(media_id):
                self.index.finish_playable(
                    media_id,
                    state="failed",
                    reason=NO_FFMPEG,
                    detail="ffmpeg is not installed where the file was stored "
                    "(apt-get install ffmpeg); a process that has it makes the copy",
                )
        except Exception as exc:  # the index is down: the sweep of a host with ffmpeg finds it
            log.warning("playable copy of media %s not recorded: %s", media_id, exc)

    def remake_missing(self, limit: int, *, older_than: float) -> None:
        """Queue items that were stored before copies existed or whose copy was abandoned."""
        if not self.available:
            return
        found = self.index.missing_playable(
            limit, older_than=max(older_than, 1.0), stale_after=self.stale_after
        )
        for row in found:
            if (
                self.index.queue_playable(row.id)
                or self.index.claim_playable_without_ffmpeg(row.id)
                or self.index.claim_stale_playable(
                    row.id, older_than=self.stale_after, max_attempts=MAX_ATTEMPTS
                )
            ):
                self._pool.executor.submit(self._make, row.id)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the copy thread (without `wait`, what is queued is left to the sweep)."""
        self._pool.shutdown(wait=wait)

    def _start(self, media_id: int) -> None:
        try:
            claimed = self.index.queue_playable(media_id)
        except Exception as exc:  # the index is down: the sweep finds the item later
            log.warning("playable copy of media %s not queued: %s", media_id, exc)
            return
        if claimed:
            self._make(media_id)

    def _make(self, media_id: int) -> None:
        try:
            self._make_one(media_id)
        except Exception as exc:  # the row stays pending; the sweep takes it over later
            log.exception("playable copy of media %s stopped: %s", media_id, exc)

    def _make_one(self, media_id: int) -> None:
        row = self.index.get_media(media_id)
        if row is None or row.state != "stored" or not row.storage_key:
            if row is not None:
                self.index.finish_playable(
                    media_id, state="failed", reason="not_stored", detail="no stored original"
                )
            return
        facts = _facts(row)
        codecs = [str(c) for c in facts.get("codecs") or []]
        duration = facts.get("duration_seconds")
        duration = float(duration) if isinstance(duration, (int, float)) else None
        chosen = plan(row.kind, row.detected_type, codecs)
        with workdir() as tmp:
            work = Path(tmp)
            source = work / "original"
            try:
                with self.store.open(row.storage_key) as src, source.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _COPY_CHUNK)
            except FileNotFoundError:
                self.index.finish_playable(
                    media_id,
                    state="failed",
                    reason="file_missing",
                    detail="the original is missing from storage",
                )
                return
            if row.kind == "video" and not row.thumbnail_key:
                self._poster(row, row.storage_key, source, work, duration)
            if chosen.target is None:
                self.index.finish_playable(media_id, state="original")
                return
            made = make_copy(source, work, chosen, duration=duration, limits=self.limits)
            if isinstance(made, Failed):
                log.info("no playable copy of media %s: %s", media_id, made.detail)
                self.index.finish_playable(
                    media_id, state="failed", reason=made.reason, detail=made.detail
                )
                return
            key = self._store(row.storage_key, made)
        self.index.finish_playable(
            media_id,
            state="ready",
            storage_key=key,
            content_type=made.target.content_type,
            size_bytes=made.size,
        )

    def _store(self, original_key: str, made: Copy) -> str:
        key = derived_key(original_key, "playable", made.target.extension)
        with made.path.open("rb") as fp:
            self.store.put(key, fp, content_type=made.target.content_type, size=made.size)
        return key

    def _poster(
        self, row: MediaItem, original_key: str, source: Path, work: Path, duration: float | None
    ) -> None:
        """The video's thumbnail is its poster frame, with the frame's perceptual hash."""
        poster = make_poster(source, work, duration=duration, limits=self.limits)
        if isinstance(poster, Failed):
            log.info("no poster frame for media %s: %s", row.id, poster.detail)
            return
        key = derived_key(original_key, "thumb", poster.extension)
        self.store.put_bytes(key, poster.data, content_type=poster.content_type)
        if poster.phash is not None:
            self.index.set_hashes([(row.id, poster.phash)])
        self.index.set_thumbnails([(row.id, key)])


def _facts(row: MediaItem) -> dict[str, Any]:
    try:
        value = json.loads(row.facts or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
