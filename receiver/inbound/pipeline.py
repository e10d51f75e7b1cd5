"""Inbound workflow: ingest, process media, retry. The only place that orders these steps.

ingest      -> the message and one `pending` row per MediaUrlN are committed
process     -> each item is leased, fetched, inspected, checked, stored
              (original first, thumbnail after: `derivatives`), then marked
              stored, rejected or failed (retried later with backoff)
sweep       -> claims due items left by crashes, outages and deadlines

The reasoning behind the numbers here: docs/design.md ("Inbound pipeline and fetching").
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any

from receiver.errors import FetchError, IndexUnavailable, StorageError
from receiver.inbound.derivatives import Derivatives
from receiver.inbound.playable import PlayableCopies
from receiver.inbound.pools import ForkSafePool
from receiver.inbound.texts import TextJobs
from receiver.index import MediaIndex, MediaItem
from receiver.index.schema import utcnow
from receiver.media.fetch import ByteBudget, Fetcher, FetchResult
from receiver.media.inspect import MediaInfo, inspect, with_av_facts
from receiver.media.ocr import TextReader
from receiver.media.policy import Policy, Verdict, check, inbound_message_cap
from receiver.media.probe import probe
from receiver.media.scan import Scanner, ScanUnavailable
from receiver.storage.base import ObjectStore
from receiver.storage.keys import media_key
from receiver.twilio.keywords import classify_keyword
from receiver.twilio.mcs import McsClient
from receiver.twilio.webhook import InboundMessage

log = logging.getLogger(__name__)

# Seconds before a retry of a failed item, by attempt number (then the last one).
BACKOFF = (5, 30, 120, 600, 1800, 3600)
#: Seconds between tries of an item waiting for clamd (RECEIVER_SCAN=required).
SCAN_RETRY_SECONDS = 5


#: Media threads per process (why so many: docs/design.md).
MEDIA_THREADS = 64


def new_owner() -> str:
    """A lease owner id unique to this process (host, pid, random)."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class IngestResult:
    """What `ingest` did with one webhook."""

    created: bool
    keyword: str | None
    #: The media items this call inserted, leased to this process (empty when not created).
    items: tuple[MediaItem, ...] = ()


@dataclass(frozen=True)
class ItemOutcome:
    """The result of processing one media item (for logs, metrics and tests)."""

    media_id: int
    state: str
    reason: str | None
    size_bytes: int | None
    kind: str | None


Observer = Callable[[ItemOutcome, float], None]


def message_row(msg: InboundMessage, keyword: str | None) -> dict[str, Any]:
    """Index columns for one inbound message."""
    return {
        "sid": msg.message_sid,
        "account_sid": msg.account_sid,
        "messaging_service_sid": msg.messaging_service_sid,
        "direction": "inbound",
        "from_addr": msg.from_.address,
        "from_channel": msg.from_.channel,
        "to_addr": msg.to.address,
        "to_channel": msg.to.channel,
        "body": msg.body,
        "num_media": msg.num_media,
        "num_segments": msg.num_segments,
        "opt_out_type": msg.opt_out_type,
        "keyword": keyword,
        "params": json.dumps([list(p) for p in msg.params]),
    }


class Pipeline:
    """Runs the inbound workflow against one index, one store and one fetcher."""

    def __init__(
        self,
        index: MediaIndex,
        store: ObjectStore,
        fetcher: Fetcher,
        policy: Policy,
        *,
        max_attempts: int = 8,
        max_message_bytes: int,
        max_media_bytes: int,
        lease_seconds: float = 120.0,
        threads: int = MEDIA_THREADS,
        delete_remote: bool = False,
        observer: Observer | None = None,
        scanner: Scanner | None = None,
        mcs: McsClient | None = None,
        reader: TextReader | None = None,
    ) -> None:
        self.index = index
        self.scanner = scanner
        self.store = store
        self.fetcher = fetcher
        self.policy = policy
        self.max_attempts = max_attempts
        self.max_message_bytes = max_message_bytes
        self.max_media_bytes = max_media_bytes
        self.lease_seconds = lease_seconds
        self.delete_remote = delete_remote
        self.observer = observer
        #: Resolves Conversations media (MCS Media URLs) to their temporary URLs.
        self.mcs = mcs
        self._owner = (os.getpid(), new_owner())
        self._pool = ForkSafePool(threads, name="media")
        self.derivatives = Derivatives(index, store)
        self.playable = PlayableCopies(index, store)
        #: Reads text in stored images (RECEIVER_OCR); None when OCR is off.
        self.texts = TextJobs(index, store, reader) if reader is not None else None

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The media thread pool of this process."""
        return self._pool.executor

    @property
    def owner(self) -> str:
        """This process's lease owner id (a forked child gets its own)."""
        if self._owner[0] != os.getpid():
            self._owner = (os.getpid(), new_owner())
        return self._owner[1]

    def shutdown(self, wait: bool = True) -> None:
        """Stop the pools (items in flight keep their lease and are retried elsewhere)."""
        # The thumbnail thread last, since items that finish queue thumbnails on it.
        self._pool.shutdown(wait=wait)
        self.derivatives.shutdown(wait=wait)
        self.playable.shutdown(wait=wait)
        if self.texts is not None:
            self.texts.shutdown(wait=wait)

    # -- ingest -----------------------------------------------------------

    def ingest(self, msg: InboundMessage) -> IngestResult:
        """Record the message durably (idempotent) and any opt-out keyword it carries."""
        keyword = classify_keyword(msg.body, msg.opt_out_type)
        media_rows = [
            {
                "idx": ref.index,
                "url": ref.url,
                "media_sid": ref.media_sid,
                "declared_type": ref.content_type,
            }
            for ref in msg.media
        ]
        # Items are leased to this process in the same transaction, so the
        # inline processing that follows needs no separate claim.
        inserted = self.index.insert_message(
            message_row(msg, keyword),
            media_rows,
            lease_owner=self.owner,
            lease_seconds=self.lease_seconds,
        )
        created = inserted is not None
        if created and keyword in ("STOP", "START"):
            sender = msg.messaging_service_sid or msg.to.address
            self.index.record_keyword(msg.from_.address, sender, keyword, msg.message_sid)
        # The account goes with each item, sparing a lookup before its fetch.
        items = tuple(replace(m, account_sid=msg.account_sid) for m in inserted or ())
        return IngestResult(created=created, keyword=keyword, items=items)

    # -- processing -------------------------------------------------------

    def process_message(
        self, sid: str, *, deadline: float, ingested: IngestResult | None = None
    ) -> None:
        """Process a message's due items concurrently, waiting at most `deadline` seconds.

        `ingested` is what this call's `ingest` returned: when it created the
        message, its items are already leased to this process; otherwise due
        items are claimed first (a duplicate delivery finds nothing to claim
        while they are in flight). Work still running at the deadline goes on
        in the background under its lease; the caller answers Twilio with what
        is known by then.
        """
        with self.derivatives.answering():
            if ingested is not None and ingested.created:
                rows: Sequence[MediaItem] = ingested.items
                # Nothing of a message just created is stored yet: the whole
                # per-message cap is left.
                futures = self.submit(rows, known=rows)
            else:
                rows = self.index.claim_media(
                    self.owner,
                    lease_seconds=self.lease_seconds,
                    limit=50,
                    max_attempts=self.max_attempts,
                    message_sid=sid,
                )
                futures = self.submit(rows)
            if futures and deadline > 0:
                wait_futures(futures, timeout=deadline)

    def submit(
        self,
        rows: Sequence[MediaItem],
        *,
        known: Sequence[MediaItem] | None = None,
    ) -> list[Future[ItemOutcome]]:
        """Queue leased rows on the pool; items of one message share its byte budget.

        `known` are all media rows of the rows' one message when the caller
        has just read them, which saves reading them again.
        """
        budgets: dict[str, ByteBudget] = {}
        futures = []
        for row in rows:
            sid = row.message_sid
            if sid not in budgets:
                budgets[sid] = self._budget_for(sid, known)
            futures.append(self.pool.submit(self.process_item, row, budgets[sid]))
        return futures

    def _budget_for(self, sid: str, known: Sequence[MediaItem] | None = None) -> ByteBudget:
        """The per-message cap (of its channel), less what is already stored for it."""
        limit = inbound_message_cap(self.max_message_bytes, self.index.channel_of(sid))
        budget = ByteBudget(limit)
        items = known if known is not None else self.index.media_of(sid)
        used = sum(m.size_bytes or 0 for m in items if m.state == "stored")
        if used:
            budget.take(min(used, limit))
        return budget

    def process_item(self, row: MediaItem, budget: ByteBudget | None = None) -> ItemOutcome:
        """Fetch, inspect, check and store one leased media item; never raises."""
        started = time.monotonic()
        try:
            outcome = self._process(row, budget or self._budget_for(row.message_sid))
        except IndexUnavailable as exc:
            # The lease expires and another sweep retries; nothing was lost.
            log.warning("index unavailable while processing media %s: %s", row.id, exc)
            outcome = ItemOutcome(row.id, "pending", "index_unavailable", None, None)
        except Exception:
            log.exception("unexpected error processing media %s of %s", row.id, row.message_sid)
            outcome = self._fail(row, "fetch_failed", "internal error; will retry", retryable=True)
        if self.observer is not None:
            try:
                self.observer(outcome, time.monotonic() - started)
            except Exception:
                log.exception("media observer failed")
        return outcome

    def _process(self, row: MediaItem, budget: ByteBudget) -> ItemOutcome:
        account_sid = row.account_sid or self.index.account_of(row.message_sid)
        if account_sid is None:  # deleted meanwhile
            return ItemOutcome(row.id, "deleted", None, None, None)
        try:
            result = self._fetch(row.url, budget)
        except FetchError as exc:
            return self._fail(row, exc.reason, str(exc), retryable=exc.retryable)
        via_mcs = self.mcs is not None and self.mcs.owns(row.url)
        with result.file as fp:
            info = inspect(fp, row.declared_type, size=result.size)
            if info.kind in ("audio", "video") and info.problem is None:
                # Tracks decide audio versus video (a voice memo in a 3GPP container).
                info = with_av_facts(info, probe(fp))
            verdict = check(info, self.policy)
            facts = _facts(info)
            if self.scanner is not None:
                try:
                    facts["scan"], verdict = self._scan(self.scanner, fp, result.size, verdict)
                except ScanUnavailable as exc:
                    return self._wait_for_scanner(row, str(exc))
            common = {
                "detected_type": info.detected_type,
                "kind": info.kind,
                "size_bytes": result.size,
                "sha256": result.sha256,
                "width": info.width,
                "height": info.height,
                "frames": info.frames,
                "animated": info.animated,
                "facts": facts,
            }
            if not verdict.accepted:
                self.index.finish_media(
                    row.id,
                    self.owner,
                    state="rejected",
                    reason=verdict.reason,
                    detail=verdict.detail,
                    **common,
                )
                log.info("media %s of %s rejected: %s", row.idx, row.message_sid, verdict.reason)
                return ItemOutcome(row.id, "rejected", verdict.reason, result.size, info.kind)
            key = media_key(
                account_sid,
                row.message_sid,
                row.idx,
                row.media_sid,
                info.extension,
            )
            try:
                fp.seek(0)
                self.store.put(
                    key,
                    fp,
                    content_type=info.detected_type,
                    size=result.size,
                    metadata={
                        "sha256": result.sha256,
                        "message-sid": row.message_sid,
                        "declared-type": _ascii(row.declared_type or "")[:200],
                    },
                )
            except StorageError as exc:
                return self._fail(
                    row, "fetch_failed", f"storage unavailable: {exc}", retryable=True, extra=common
                )
            stored = self.index.finish_media(
                row.id,
                self.owner,
                state="stored",
                reason=None,
                # An accepted file can still carry a note (a declared type that disagrees).
                detail=verdict.detail or None,
                storage_key=key,
                next_attempt_at=None,
                # Twilio's Messages API deletes messaging media only, not MCS files.
                remote_delete_state="pending" if self.delete_remote and not via_mcs else None,
                **common,
            )
            if not stored:
                log.warning("lease on media %s was lost before it finished", row.id)
            elif info.kind == "image":
                # Derivatives follow the answer: the original is safe, Twilio is waiting.
                self.derivatives.queue(row.id, key)
                if self.texts is not None:
                    self.texts.queue(row, key)
            elif info.kind in ("audio", "video"):
                # Poster frame and playable copy: seconds of ffmpeg, on their own thread.
                self.playable.queue(row.id)
        return ItemOutcome(row.id, "stored", None, result.size, info.kind)

    @staticmethod
    def _scan(scanner: Scanner, fp: Any, size: int, verdict: Verdict) -> tuple[str, Verdict]:
        """The scan state and the verdict after scanning; malware wins over every reason.

        Raises ScanUnavailable when clamd gives no answer and scanning is required.
        """
        try:
            result = scanner.client.scan(fp, size)
        except ScanUnavailable:
            if scanner.required:
                raise
            log.warning("clamd unreachable; storing unscanned (RECEIVER_SCAN=optional)")
            return "unscanned", verdict
        if result.verdict == "malware":
            return "malware", Verdict(False, "malware", f"clamd found {result.signature}")
        if result.verdict == "too_large":
            if not scanner.required:
                return "unscanned", verdict
            if not verdict.accepted:
                return "unscanned", verdict
            limit = scanner.stream_max
            return "unscanned", Verdict(
                False,
                "too_large",
                f"{size:,} bytes is over clamd's StreamMaxLength of {limit:,} bytes, so it "
                "cannot be scanned; scanning is required (RECEIVER_SCAN)",
            )
        return "clean", verdict

    def _wait_for_scanner(self, row: MediaItem, detail: str) -> ItemOutcome:
        """Back to `pending` until clamd answers; the wait spends none of the retry budget."""
        self.index.finish_media(
            row.id,
            self.owner,
            state="pending",
            reason="scan_unavailable",
            detail=detail[:500],
            attempts=max(int(row.attempts or 1) - 1, 0),
            next_attempt_at=utcnow() + timedelta(seconds=SCAN_RETRY_SECONDS),
        )
        log.warning("media %s of %s waits for clamd: %s", row.idx, row.message_sid, detail)
        return ItemOutcome(row.id, "pending", "scan_unavailable", None, None)

    def _fetch(self, url: str, budget: ByteBudget) -> FetchResult:
        """Download one item; an MCS Media URL goes through its temporary URL."""
        if self.mcs is None or not self.mcs.owns(url):
            return self.fetcher.fetch(url, max_bytes=self.max_media_bytes, budget=budget)
        for attempt in range(2):
            # The temporary URL gets no credentials (it is not the API origin).
            temporary = self.mcs.temporary_url(url)
            try:
                return self.fetcher.fetch(temporary, max_bytes=self.max_media_bytes, budget=budget)
            except FetchError as exc:
                # An expired temporary URL answers 403: ask MCS once for a fresh one.
                if exc.status != 403 or attempt:
                    raise
        raise AssertionError("unreachable")

    def _fail(
        self,
        row: MediaItem,
        reason: str,
        detail: str,
        *,
        retryable: bool,
        extra: dict[str, Any] | None = None,
    ) -> ItemOutcome:
        attempts = int(row.attempts or 1)
        fields: dict[str, Any] = dict(extra or {})
        if not retryable and reason in ("blocked_host", "too_large", "message_too_large"):
            state = "rejected"
        else:
            state = "failed"
            if retryable and attempts < self.max_attempts:
                delay = BACKOFF[min(attempts - 1, len(BACKOFF) - 1)]
                fields["next_attempt_at"] = utcnow() + timedelta(seconds=delay)
            else:
                # Out of automatic retries: `mms-receiver retry` puts it back.
                # No next attempt marks it final (the index writes `media.failed`).
                fields["attempts"] = self.max_attempts
                fields["next_attempt_at"] = None
        self.index.finish_media(
            row.id, self.owner, state=state, reason=reason, detail=detail[:500], **fields
        )
        log.info("media %s of %s %s: %s (%s)", row.idx, row.message_sid, state, reason, detail)
        return ItemOutcome(row.id, state, reason, None, None)

    # -- background -------------------------------------------------------

    def sweep(self, limit: int = 16, *, wait: bool = True) -> int:
        """Claim due items (left by crashes, outages, deadlines) and process them.

        Also remakes thumbnails that a crash between storing an image and
        deriving it left missing.
        """
        rows = self.index.claim_media(
            self.owner,
            lease_seconds=self.lease_seconds,
            limit=limit,
            max_attempts=self.max_attempts,
        )
        futures = self.submit(rows)
        self.derivatives.remake_missing(limit, older_than=self.lease_seconds)
        self.playable.remake_missing(limit, older_than=self.lease_seconds)
        if self.texts is not None:
            self.texts.sweep(limit, older_than=self.lease_seconds)
        if wait and futures:
            wait_futures(futures)
        return len(rows)

    def run_forever(
        self,
        stop: threading.Event,
        *,
        interval: float = 2.0,
        extra: Callable[[], None] | None = None,
    ) -> None:
        """The worker loop: sweep until `stop` is set; back off while the index is down."""
        while not stop.is_set():
            try:
                n = self.sweep()
                if extra is not None:
                    extra()
            except IndexUnavailable as exc:
                log.warning("worker: index unavailable (%s); retrying in %.0fs", exc, interval * 5)
                stop.wait(interval * 5)
                continue
            except Exception:
                log.exception("worker: sweep failed")
                n = 0
            if n == 0:
                stop.wait(interval)


def _ascii(text: str) -> str:
    """Object metadata must be printable ASCII (S3's rule, kept on every store)."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _facts(info: MediaInfo) -> dict[str, Any]:
    facts: dict[str, Any] = {"mismatch": info.mismatch}
    if info.orientation:
        facts["orientation"] = info.orientation
    if info.image_format:
        facts["format"] = info.image_format
    if info.contact is not None:
        facts["contact"] = asdict(info.contact)
    if info.contacts:
        facts["contacts"] = [asdict(card) for card in info.contacts]
    if info.declared_type:
        facts["declared"] = info.declared_type
    if info.container is not None:
        facts |= {
            "container": info.container,
            "codecs": list(info.codecs),
            "duration_seconds": info.duration_seconds,
            "rotation": info.rotation,
        }
    return facts
