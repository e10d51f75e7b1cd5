"""The thumbnail queue: derivatives of stored images, made after the webhook is answered.

Each thumbnail brings the image's perceptual hash (receiver.media.phash),
computed from the frame already decoded small, and both are recorded together.

Why it has one low-priority thread, waits for quiet and records in batches:
docs/design.md ("Inbound pipeline and fetching").
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from receiver.inbound.pools import ForkSafePool, lower_thread_priority
from receiver.index import MediaIndex
from receiver.index.records import MediaItem
from receiver.media.transform import make_thumbnail, perceptual_hash
from receiver.storage.base import ObjectStore
from receiver.storage.keys import derived_key

__all__ = ["Derivatives"]

log = logging.getLogger(__name__)

#: At most this many thumbnail keys wait to be recorded together.
DERIVE_BATCH = 32
#: Thumbnails wait for a moment without webhooks at most this long each (seconds)...
DERIVE_MAX_WAIT = 5.0
#: ...and do not wait at all while more than this many are queued.
DERIVE_MAX_DEFERRED = 500
#: Thumbnails made inside requests at the same time in one process (a page of new
#: photos asks for all of them at once); the others wait at most ON_DEMAND_WAIT seconds.
ON_DEMAND_SLOTS = 2
ON_DEMAND_WAIT = 10.0


@dataclass(frozen=True)
class Made:
    """A thumbnail stored and not yet recorded, with the image's perceptual hash."""

    media_id: int
    thumbnail_key: str
    phash: int | None


class Derivatives:
    """Makes and records thumbnails of stored images, on one thread of this process.

    A crash loses only the queue: `remake_missing` (run by the sweep) makes
    again the thumbnails that were never recorded.
    """

    def __init__(self, index: MediaIndex, store: ObjectStore) -> None:
        self.index = index
        self.store = store
        self._pool = ForkSafePool(
            1, name="derive", initializer=lower_thread_priority, on_new=self._forget_queue
        )
        # Guarded by `_quiet`: webhooks of this process now waiting for their
        # media, thumbnails queued and not yet made, and those made but not
        # yet recorded.
        self._quiet = threading.Condition()
        self._answering_now = 0
        self._backlog = 0
        self._derived: list[Made] = []
        self._on_demand = threading.BoundedSemaphore(ON_DEMAND_SLOTS)

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The thumbnail thread's executor in this process."""
        return self._pool.executor

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Mark a webhook of this process as waiting for its media; thumbnails wait meanwhile."""
        with self._quiet:
            self._answering_now += 1
        try:
            yield
        finally:
            with self._quiet:
                self._answering_now -= 1
                if self._answering_now == 0:
                    self._quiet.notify_all()

    def queue(self, media_id: int, key: str) -> None:
        """Make the thumbnail of the stored image at `key` on the thumbnail thread.

        A key that is never recorded (a crash, the index down) leaves the item
        to `remake_missing`.
        """
        pool = self.pool
        with self._quiet:
            self._backlog += 1
        pool.submit(self._make_queued, media_id, key)

    def make_now(self, row: MediaItem) -> MediaItem:
        """`row` with a thumbnail, made and recorded on the caller's thread when it is still
        queued (a page opened right after arrival asks before the thumbnail thread got to it).

        Bounded: at most ON_DEMAND_SLOTS at once, and `make_thumbnail` decodes a reduced
        image under the pixel cap. Returns `row` unchanged when busy or the image fails.
        """
        if row.thumbnail_key or not row.storage_key or row.state != "stored":
            return row
        if not self._on_demand.acquire(timeout=ON_DEMAND_WAIT):
            return row
        try:
            made = self._store_thumbnail(row.id, row.storage_key)
        finally:
            self._on_demand.release()
        if made is None:
            return row
        self._record([made])
        return replace(row, thumbnail_key=made.thumbnail_key)

    def hash_now(self, row: MediaItem) -> None:
        """Record the perceptual hash of a stored image that has none, on the caller's thread.

        A queued thumbnail is made now (`make_now`, which brings the hash); an image whose
        thumbnail was made before hashes were kept is hashed from that small thumbnail.
        """
        if row.kind != "image" or row.state != "stored":
            return
        if not row.thumbnail_key:
            self.make_now(row)
            return
        try:
            with self.store.open(row.thumbnail_key) as fp:
                self.index.set_hashes([(row.id, perceptual_hash(fp))])
        except Exception as exc:  # no hash is no match, never a failed page
            log.warning("perceptual hash of media %s failed: %s", row.id, exc)

    def remake_missing(self, limit: int, *, older_than: float) -> None:
        """Make, on this thread, thumbnails of images stored over `older_than` seconds ago."""
        remade = [
            made
            for row in self.index.missing_thumbnails(limit, older_than=older_than)
            if row.storage_key and (made := self._store_thumbnail(row.id, row.storage_key))
        ]
        self._record(remade)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the thumbnail thread (without `wait`, what is queued is left to the sweep)."""
        self._pool.shutdown(wait=wait)

    def _forget_queue(self) -> None:
        # A new pool starts with an empty queue (the old one's died with a fork).
        self._backlog, self._derived = 0, []

    def _wait_for_quiet(self) -> None:
        with self._quiet:
            self._quiet.wait_for(
                lambda: self._answering_now == 0 or self._backlog > DERIVE_MAX_DEFERRED,
                timeout=DERIVE_MAX_WAIT,
            )

    def _make_queued(self, media_id: int, key: str) -> None:
        self._wait_for_quiet()
        made = self._store_thumbnail(media_id, key)
        with self._quiet:
            self._backlog -= 1
            if made is not None:
                self._derived.append(made)
            batch: list[Made] = []
            if self._backlog == 0 or len(self._derived) >= DERIVE_BATCH:
                batch, self._derived = self._derived, []
        self._record(batch)

    def _record(self, made: list[Made]) -> None:
        if not made:
            return
        try:
            # Hashes first: an item with a thumbnail is never made again by the sweep.
            self.index.set_hashes([(m.media_id, m.phash) for m in made if m.phash is not None])
            self.index.set_thumbnails([(m.media_id, m.thumbnail_key) for m in made])
        except Exception as exc:  # the sweep finds them again
            log.warning("%d thumbnails not recorded, left for the sweep: %s", len(made), exc)

    def _store_thumbnail(self, media_id: int, key: str) -> Made | None:
        try:
            with self.store.open(key) as fp:
                thumb = make_thumbnail(fp)
            thumbnail_key = derived_key(key, "thumb", thumb.extension)
            self.store.put_bytes(thumbnail_key, thumb.data, content_type=thumb.content_type)
            return Made(media_id, thumbnail_key, thumb.phash)
        except Exception as exc:  # a thumbnail is a convenience; the original is what matters
            log.warning("thumbnail of media %s failed: %s", media_id, exc)
            return None
