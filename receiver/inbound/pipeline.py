"""Inbound workflow: ingest, process media, retry. The only place that orders these steps.

ingest      -> the message and one `pending` row per MediaUrlN are committed
process     -> each item is leased, fetched, inspected, checked, stored
              (original first, thumbnail after), then marked stored,
              rejected or failed (retried later with backoff)
sweep       -> claims due items left by crashes, outages and deadlines
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from receiver.errors import FetchError, IndexUnavailable, StorageError
from receiver.index import MediaIndex
from receiver.index.schema import utcnow
from receiver.media.fetch import ByteBudget, Fetcher
from receiver.media.inspect import MediaInfo, inspect
from receiver.media.policy import Policy, check
from receiver.media.transform import make_thumbnail
from receiver.storage.base import ObjectStore
from receiver.storage.keys import derived_key, media_key
from receiver.twilio.keywords import classify_keyword
from receiver.twilio.webhook import InboundMessage

log = logging.getLogger(__name__)

# Seconds before a retry of a failed item, by attempt number (then the last one).
BACKOFF = (5, 30, 120, 600, 1800, 3600)


#: Media threads per process. Each webhook thread waits for all of its
#: message's items (up to 10), so with gunicorn's 8 threads a process has
#: dozens of items in flight, nearly all waiting on the network. A pool
#: smaller than that queues one message's items behind another's, which
#: adds a whole download to its answer; an idle thread costs little.
MEDIA_THREADS = 64

#: How much lower than the webhook threads the thumbnail thread runs (see `nice`).
DERIVE_NICENESS = 19
#: At most this many thumbnail keys wait to be recorded together.
DERIVE_BATCH = 32
#: Thumbnails wait for a moment without webhooks at most this long each (seconds)...
DERIVE_MAX_WAIT = 5.0
#: ...and do not wait at all while more than this many are queued.
DERIVE_MAX_DEFERRED = 500


def new_owner() -> str:
    """A lease owner id unique to this process (host, pid, random)."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class IngestResult:
    """What `ingest` did with one webhook."""

    created: bool
    keyword: str | None
    #: The media rows this call inserted, leased to this process (empty when not created).
    items: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ItemOutcome:
    """The result of processing one media item (for logs, metrics and tests)."""

    media_id: int
    state: str
    reason: str | None
    size_bytes: int | None
    kind: str | None


Observer = Callable[[ItemOutcome, float], None]
RemoteDeleter = Callable[[str, str, str], None]


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
    ) -> None:
        self.index = index
        self.store = store
        self.fetcher = fetcher
        self.policy = policy
        self.max_attempts = max_attempts
        self.max_message_bytes = max_message_bytes
        self.max_media_bytes = max_media_bytes
        self.lease_seconds = lease_seconds
        self.delete_remote = delete_remote
        self.observer = observer
        self._owner = (os.getpid(), new_owner())
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._derive_pool: ThreadPoolExecutor | None = None
        self._derive_pid = 0
        # Guarded by `_quiet`: webhooks of this process now waiting for their
        # media, thumbnails queued and not yet made, and those made but not
        # yet recorded.
        self._quiet = threading.Condition()
        self._answering_now = 0
        self._derive_backlog = 0
        self._derived: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    # -- executor (created lazily, and again after a fork) ---------------

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The thread pool of this process; threads never survive a fork, so make one per pid."""
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="media")
                self._pool_pid = os.getpid()
            return self._pool

    @property
    def derive_pool(self) -> ThreadPoolExecutor:
        """One thread for thumbnails: they use at most one core and never queue
        ahead of the fetches a waiting webhook needs. A crash loses only this
        queue; `sweep` remakes thumbnails that are missing."""
        with self._lock:
            if self._derive_pool is None or self._derive_pid != os.getpid():
                self._derive_pool = ThreadPoolExecutor(
                    1, thread_name_prefix="derive", initializer=_lower_thread_priority
                )
                self._derive_pid = os.getpid()
                self._derive_backlog, self._derived = 0, []
            return self._derive_pool

    @property
    def owner(self) -> str:
        """This process's lease owner id (a forked child gets its own)."""
        if self._owner[0] != os.getpid():
            self._owner = (os.getpid(), new_owner())
        return self._owner[1]

    def shutdown(self, wait: bool = True) -> None:
        """Stop the pool (items in flight keep their lease and are retried elsewhere)."""
        # Outside the lock, since items in flight reach for the pools; the
        # derive pool last, since items that finish queue thumbnails on it.
        with self._lock:
            pool = self._pool if self._pool_pid == os.getpid() else None
            self._pool = None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=not wait)
        with self._lock:
            derive = self._derive_pool if self._derive_pid == os.getpid() else None
            self._derive_pool = None
        if derive is not None:
            derive.shutdown(wait=wait, cancel_futures=not wait)

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
            self.index.set_opt_out(
                msg.from_.address,
                sender,
                opted_out=keyword == "STOP",
                keyword=keyword,
                source="inbound",
                message_sid=msg.message_sid,
            )
        # The account goes with each item, sparing a lookup before its fetch.
        items = tuple({**m, "account_sid": msg.account_sid} for m in inserted or ())
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
        with self._answering():
            if ingested is not None and ingested.created:
                rows: Sequence[dict[str, Any]] = ingested.items
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

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """Mark a webhook of this process as waiting for its media (see `_wait_for_quiet`)."""
        with self._quiet:
            self._answering_now += 1
        try:
            yield
        finally:
            with self._quiet:
                self._answering_now -= 1
                if self._answering_now == 0:
                    self._quiet.notify_all()

    def _wait_for_quiet(self) -> None:
        # Thumbnails share this process's GIL with the webhooks Twilio is
        # waiting on, so they wait until no webhook is, for at most
        # DERIVE_MAX_WAIT seconds each, and not at all once DERIVE_MAX_DEFERRED
        # are queued: a burst is answered first and its thumbnails follow.
        with self._quiet:
            self._quiet.wait_for(
                lambda: self._answering_now == 0 or self._derive_backlog > DERIVE_MAX_DEFERRED,
                timeout=DERIVE_MAX_WAIT,
            )

    def submit(
        self,
        rows: Sequence[dict[str, Any]],
        *,
        known: Sequence[dict[str, Any]] | None = None,
    ) -> list[Future[ItemOutcome]]:
        """Queue leased rows on the pool; items of one message share its byte budget.

        `known` are all media rows of the rows' one message when the caller
        has just read them, which saves reading them again.
        """
        budgets: dict[str, ByteBudget] = {}
        futures = []
        for row in rows:
            sid = row["message_sid"]
            if sid not in budgets:
                budgets[sid] = self._budget_for(sid, known)
            futures.append(self.pool.submit(self.process_item, row, budgets[sid]))
        return futures

    def _budget_for(self, sid: str, known: Sequence[dict[str, Any]] | None = None) -> ByteBudget:
        """The per-message cap, less what is already stored for that message."""
        budget = ByteBudget(self.max_message_bytes)
        items = known if known is not None else self.index.media_of(sid)
        used = sum(m["size_bytes"] or 0 for m in items if m["state"] == "stored")
        if used:
            budget.take(min(used, self.max_message_bytes))
        return budget

    def process_item(self, row: dict[str, Any], budget: ByteBudget | None = None) -> ItemOutcome:
        """Fetch, inspect, check and store one leased media item; never raises."""
        started = time.monotonic()
        try:
            outcome = self._process(row, budget or self._budget_for(row["message_sid"]))
        except IndexUnavailable as exc:
            # The lease expires and another sweep retries; nothing was lost.
            log.warning("index unavailable while processing media %s: %s", row["id"], exc)
            outcome = ItemOutcome(row["id"], "pending", "index_unavailable", None, None)
        except Exception:
            log.exception(
                "unexpected error processing media %s of %s", row["id"], row["message_sid"]
            )
            outcome = self._fail(row, "fetch_failed", "internal error; will retry", retryable=True)
        if self.observer is not None:
            try:
                self.observer(outcome, time.monotonic() - started)
            except Exception:
                log.exception("media observer failed")
        return outcome

    def _process(self, row: dict[str, Any], budget: ByteBudget) -> ItemOutcome:
        account_sid = row.get("account_sid") or self.index.account_of(row["message_sid"])
        if account_sid is None:  # deleted meanwhile
            return ItemOutcome(row["id"], "deleted", None, None, None)
        try:
            result = self.fetcher.fetch(row["url"], max_bytes=self.max_media_bytes, budget=budget)
        except FetchError as exc:
            return self._fail(row, exc.reason, str(exc), retryable=exc.retryable)
        with result.file as fp:
            info = inspect(fp, row.get("declared_type"), size=result.size)
            verdict = check(info, self.policy)
            facts = _facts(info)
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
                    row["id"],
                    self.owner,
                    state="rejected",
                    reason=verdict.reason,
                    detail=verdict.detail,
                    **common,
                )
                log.info(
                    "media %s of %s rejected: %s", row["idx"], row["message_sid"], verdict.reason
                )
                return ItemOutcome(row["id"], "rejected", verdict.reason, result.size, info.kind)
            key = media_key(
                account_sid,
                row["message_sid"],
                row["idx"],
                row.get("media_sid"),
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
                        "message-sid": row["message_sid"],
                        "declared-type": _ascii(row.get("declared_type") or "")[:200],
                    },
                )
            except StorageError as exc:
                return self._fail(
                    row, "fetch_failed", f"storage unavailable: {exc}", retryable=True, extra=common
                )
            stored = self.index.finish_media(
                row["id"],
                self.owner,
                state="stored",
                reason=None,
                detail=None,
                storage_key=key,
                next_attempt_at=None,
                remote_delete_state="pending" if self.delete_remote else None,
                **common,
            )
            if not stored:
                log.warning("lease on media %s was lost before it finished", row["id"])
            elif info.kind == "image":
                # Derivatives follow the answer: the original is safe, Twilio is waiting.
                self.queue_derivatives(row["id"], key)
        return ItemOutcome(row["id"], "stored", None, result.size, info.kind)

    def queue_derivatives(self, media_id: int, key: str) -> None:
        """Make the thumbnail on the derive thread.

        Keys are recorded in one transaction per run of queued work, not one
        per image: under load that takes most writes off SQLite's single
        writer lock, which the webhooks wait on. A key that is never recorded
        (a crash, the index down) leaves the item to `sweep`.
        """
        pool = self.derive_pool
        with self._quiet:
            self._derive_backlog += 1
        pool.submit(self._derive_queued, media_id, key)

    def _derive_queued(self, media_id: int, key: str) -> None:
        self._wait_for_quiet()
        thumbnail_key = self._store_thumbnail(media_id, key)
        with self._quiet:
            self._derive_backlog -= 1
            if thumbnail_key is not None:
                self._derived.append((media_id, thumbnail_key))
            batch: list[tuple[int, str]] = []
            if self._derive_backlog == 0 or len(self._derived) >= DERIVE_BATCH:
                batch, self._derived = self._derived, []
        self._record_thumbnails(batch)

    def _record_thumbnails(self, pairs: list[tuple[int, str]]) -> None:
        if not pairs:
            return
        try:
            self.index.set_thumbnails(pairs)
        except Exception as exc:  # the sweep finds them again
            log.warning("%d thumbnails not recorded, left for the sweep: %s", len(pairs), exc)

    def _store_thumbnail(self, media_id: int, key: str) -> str | None:
        try:
            with self.store.open(key) as fp:
                thumb = make_thumbnail(fp)
            thumbnail_key = derived_key(key, "thumb", thumb.extension)
            self.store.put_bytes(thumbnail_key, thumb.data, content_type=thumb.content_type)
            return thumbnail_key
        except Exception as exc:  # a thumbnail is a convenience; the original is what matters
            log.warning("thumbnail of media %s failed: %s", media_id, exc)
            return None

    def _fail(
        self,
        row: dict[str, Any],
        reason: str,
        detail: str,
        *,
        retryable: bool,
        extra: dict[str, Any] | None = None,
    ) -> ItemOutcome:
        attempts = int(row.get("attempts") or 1)
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
                fields["attempts"] = self.max_attempts
        self.index.finish_media(
            row["id"], self.owner, state=state, reason=reason, detail=detail[:500], **fields
        )
        log.info(
            "media %s of %s %s: %s (%s)", row["idx"], row["message_sid"], state, reason, detail
        )
        return ItemOutcome(row["id"], state, reason, None, None)

    # -- remote deletion --------------------------------------------------

    def delete_remote_copies(self, deleter: RemoteDeleter, limit: int = 50) -> int:
        """Delete Twilio's copy of stored items whose stored copy reads back intact.

        The stored object is read back and its SHA-256 compared with the one
        computed while downloading; only then is the Twilio Media resource
        deleted. Failures are recorded and retried on the next sweep.
        """
        done = 0
        for row in self.index.remote_deletions_due(limit):
            if not row.get("media_sid") or not row.get("storage_key"):
                self.index.set_remote_delete(row["id"], "skipped")
                continue
            try:
                if _sha256_of(self.store, row["storage_key"]) != row["sha256"]:
                    log.error(
                        "stored copy of media %s does not match its SHA-256; keeping Twilio's copy",
                        row["id"],
                    )
                    self.index.set_remote_delete(row["id"], "mismatch")
                    continue
                deleter(row["account_sid"], row["message_sid"], row["media_sid"])
            except Exception as exc:
                log.warning("remote deletion of media %s failed (will retry): %s", row["id"], exc)
                self.index.set_remote_delete(row["id"], "failed")
                continue
            self.index.set_remote_delete(row["id"], "done")
            done += 1
        return done

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
        remade = [
            (row["id"], thumbnail_key)
            for row in self.index.missing_thumbnails(limit, older_than=self.lease_seconds)
            if (thumbnail_key := self._store_thumbnail(row["id"], row["storage_key"]))
        ]
        self._record_thumbnails(remade)
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


def _lower_thread_priority() -> None:
    # On Linux a thread has its own nice value: thumbnails (C code that releases
    # the GIL) then take the CPU only when answering webhooks leaves it idle.
    # Not Linux, or not allowed: the thread runs at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DERIVE_NICENESS)


def _sha256_of(store: ObjectStore, key: str) -> str:
    """SHA-256 of a stored object, read back in chunks."""
    digest = hashlib.sha256()
    with store.open(key) as fp:
        while chunk := fp.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


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
    if info.declared_type:
        facts["declared"] = info.declared_type
    return facts
