"""Reading text in stored images (RECEIVER_OCR), on one low-priority background thread.

Apart from the thumbnail thread (`derivatives`): reading one photo takes
seconds, and a page waits for thumbnails, not for text. Each image is claimed
in the index first (`claim_text`), so several processes (gunicorn workers,
`worker`, `backfill`) never read the same image at once, and a claim whose
process died is taken over. Design: docs/design.md ("Text in images").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import timedelta

from receiver.inbound.pools import ForkSafePool, lower_thread_priority
from receiver.index import MediaIndex
from receiver.index.records import MediaItem
from receiver.index.schema import utcnow
from receiver.index.texts import ReadText
from receiver.media.ocr import TextReader
from receiver.storage.base import ObjectStore

__all__ = ["TextJobs"]

log = logging.getLogger(__name__)

#: The sweep reads images left unread (a crash lost the queue) when stored this recently;
#: older ones are `mms-receiver backfill`'s.
SWEEP_WITHIN = timedelta(days=1)
#: Seconds between two such looks while the last one found less than a batch: each
#: reads the day's stored images from the index.
FILL_EVERY = 60.0


class TextJobs:
    """Reads and records the text of stored images, on one thread of this process."""

    def __init__(self, index: MediaIndex, store: ObjectStore, reader: TextReader) -> None:
        self.index = index
        self.store = store
        self.reader = reader
        self._pool = ForkSafePool(
            1, name="ocr", initializer=lower_thread_priority, on_new=self._forget_queue
        )
        self._lock = threading.Lock()
        self._queued = 0
        self._warned = False
        self.fill_every = FILL_EVERY
        self._next_fill = 0.0

    @property
    def stale_after(self) -> float:
        """Seconds after which another process takes over a claimed image."""
        return max(60.0, self.reader.timeout * 4)

    def ready(self) -> bool:
        """Whether tesseract and every language are installed (logged once when not)."""
        problems = self.reader.problems()
        if problems and not self._warned:
            self._warned = True
            for problem in problems:
                log.error("text in images is not read: %s", problem)
        return not problems

    def queue(self, item: MediaItem, key: str) -> None:
        """Read the stored image at `key` on the OCR thread."""
        if not self.ready():
            return
        pool = self._pool.executor  # first: a new pool starts with an empty count
        with self._lock:
            self._queued += 1
        pool.submit(self._read_queued, item.id, item.message_sid, key)

    def sweep(self, limit: int, *, older_than: float) -> None:
        """Queue the recent images left unread, when this process's OCR thread is idle
        (at most every `fill_every` seconds once caught up)."""
        pool = self._pool.executor
        with self._lock:
            if self._queued or time.monotonic() < self._next_fill:
                return
            self._queued += 1
        pool.submit(self._fill, limit, older_than)

    def read(self, items: Iterable[MediaItem], *, retry_failed: bool = False) -> list[ReadText]:
        """Read and record each item not claimed elsewhere, on the caller's thread (with
        `retry_failed`, also those whose last reading timed out or failed)."""
        done = []
        for item in items:
            if item.storage_key is None:
                continue
            result = self._read(
                item.id, item.message_sid, item.storage_key, retry_failed=retry_failed
            )
            if result is not None:
                done.append(result)
        return done

    def shutdown(self, wait: bool = True) -> None:
        """Stop the OCR thread (without `wait`, what is queued is left to the sweep)."""
        self._pool.shutdown(wait=wait)

    def _forget_queue(self) -> None:
        self._queued = 0

    def _read_queued(self, media_id: int, message_sid: str, key: str) -> None:
        try:
            self._read(media_id, message_sid, key)
        finally:
            with self._lock:
                self._queued -= 1

    def _fill(self, limit: int, older_than: float) -> None:
        try:
            if not self.ready():
                return
            now = utcnow()
            rows = self.index.images_missing(
                limit=limit,
                since=now - SWEEP_WITHIN,
                before=now - timedelta(seconds=older_than),
                hashes=False,
                texts=True,
                stale_after=self.stale_after,
            )
            self.read(rows)
            if len(rows) < limit:  # caught up: look again later
                self._next_fill = time.monotonic() + self.fill_every
        except Exception as exc:  # the next sweep tries again
            log.warning("reading unread images failed: %s", exc)
        finally:
            with self._lock:
                self._queued -= 1

    def _read(
        self, media_id: int, message_sid: str, key: str, *, retry_failed: bool = False
    ) -> ReadText | None:
        try:
            if not self.index.claim_text(
                media_id,
                message_sid,
                self.reader.lang,
                stale_after=self.stale_after,
                retry_failed=retry_failed,
            ):
                return None
            with self.store.open(key) as fp:
                result = self.reader.read(fp)
        except Exception as exc:  # the claim goes stale and the sweep or backfill retries
            log.warning("text of media %s not read: %s", media_id, exc)
            return None
        if result.outcome != "done":
            log.warning("text of media %s: %s (%s)", media_id, result.outcome, result.detail)
        read = ReadText(
            media_id,
            message_sid,
            result.outcome,
            result.text or "",
            result.languages,
            result.detail,
            round(result.seconds, 3),
        )
        try:
            self.index.set_texts([read])
        except Exception as exc:
            log.warning("text of media %s not recorded: %s", media_id, exc)
            return None
        return read
