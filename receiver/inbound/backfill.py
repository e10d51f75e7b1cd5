"""Perceptual hashes (and, with OCR on, text) for images stored before they were made.

Two passes over the stored images that lack one, each in id order a batch at a
time, recording every batch before the next: an interrupted run loses at most
one batch, and running again goes on from there (what is recorded is never
selected again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from receiver.inbound.texts import TextJobs
from receiver.index import MediaIndex
from receiver.index.records import MediaItem
from receiver.media.transform import perceptual_hash
from receiver.storage.base import ObjectStore

__all__ = ["BackfillReport", "backfill"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class BackfillReport:
    """What a backfill did (or, in a dry run, would do)."""

    dry_run: bool = False
    hashes_missing: int = 0
    hashed: int = 0
    texts_missing: int = 0
    read: int = 0
    #: Images that could not be hashed or read (damaged files; tesseract over time).
    failed: int = 0
    ocr: bool = False
    retry_failed: bool = False

    def summary(self) -> str:
        """One line for the command's output."""
        if self.dry_run:
            without = "without text (or failed)" if self.retry_failed else "without text"
            texts = f", {self.texts_missing} {without}" if self.ocr else ""
            return f"dry run: {self.hashes_missing} image(s) without a perceptual hash{texts}"
        texts = f", read text in {self.read} of {self.texts_missing}" if self.ocr else ""
        return (
            f"hashed {self.hashed} of {self.hashes_missing} image(s){texts}; {self.failed} failed"
        )


def backfill(
    index: MediaIndex,
    store: ObjectStore,
    texts: TextJobs | None,
    *,
    since: datetime | None = None,
    batch: int = 100,
    dry_run: bool = False,
    retry_failed: bool = False,
    progress: Progress | None = None,
) -> BackfillReport:
    """Hash every stored image created since `since` (all when None) that has no hash,
    then, when `texts` is given (OCR on), read those with no text; with `retry_failed`,
    also those whose reading timed out or failed."""
    report = BackfillReport(dry_run=dry_run, ocr=texts is not None, retry_failed=retry_failed)
    for rows in _pages(index, since, batch, hashes=True):
        report.hashes_missing += len(rows)
        if dry_run:
            continue
        pairs = [(row.id, value) for row in rows if (value := _hash(store, row)) is not None]
        index.set_hashes(pairs)
        report.hashed += len(pairs)
        report.failed += len(rows) - len(pairs)
        if progress:
            progress(f"hashed {report.hashed} image(s), up to media {rows[-1].id}")
    if texts is None:
        return report
    stale = texts.stale_after
    for rows in _pages(
        index, since, batch, texts=True, stale_after=stale, retry_failed=retry_failed
    ):
        report.texts_missing += len(rows)
        if dry_run:
            continue
        results = texts.read(rows, retry_failed=retry_failed)
        report.read += sum(1 for r in results if r.outcome == "done")
        report.failed += sum(1 for r in results if r.outcome != "done")
        if progress:
            progress(f"read {report.read} image(s), up to media {rows[-1].id}")
    return report


def _pages(
    index: MediaIndex,
    since: datetime | None,
    batch: int,
    *,
    hashes: bool = False,
    texts: bool = False,
    stale_after: float = 600.0,
    retry_failed: bool = False,
) -> Iterator[list[MediaItem]]:
    # By id after the last one seen, so an image that fails is not selected again.
    after = 0
    while rows := index.images_missing(
        after_id=after,
        limit=batch,
        since=since,
        hashes=hashes,
        texts=texts,
        stale_after=stale_after,
        retry_failed=retry_failed,
    ):
        yield rows
        after = rows[-1].id


def _hash(store: ObjectStore, row: MediaItem) -> int | None:
    # From the original's thumbnail-size frame, so the bits equal those of a new image.
    if row.storage_key is None:
        return None
    try:
        with store.open(row.storage_key) as fp:
            return perceptual_hash(fp)
    except Exception as exc:  # a damaged file has no hash; it is counted as failed
        log.warning("perceptual hash of media %s failed: %s", row.id, exc)
        return None
