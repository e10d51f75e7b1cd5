"""Data lifecycle: purge what is past retention, export what is kept, delete one message.

Deletion always goes objects first, then rows. A purge that is interrupted
(crash, Ctrl-C, storage outage) leaves at worst a message row whose objects
are already gone; the next run finds the row again, deletes whatever is left
(deleting a missing object is not an error) and then the row. So a purge can
be repeated until it reports nothing left: it is resumable by construction.

Messages whose media are being processed right now (an unexpired lease) are
skipped and counted, so a purge never races a download into an orphan object.

`erase_message` is the one way a message is deleted: the API, the browser
and `purge` all call it.

This module has no command-line code: `receiver.commands.lifecycle` wraps it
with click, progress bars included (callers pass a `progress(n)` callback).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO

from receiver.errors import ConfigError
from receiver.index import MediaIndex, MessageRecord
from receiver.index.schema import utcnow
from receiver.index.serialize import message_json
from receiver.storage.base import ObjectStore
from receiver.storage.keys import message_prefixes

log = logging.getLogger(__name__)

Progress = Callable[[int], None]

_DURATION = re.compile(r"\s*(\d+)\s*([smhdw]?)\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "days"}


@dataclass(frozen=True)
class PurgeReport:
    """What a purge did (or, in a dry run, would do)."""

    cutoff: datetime
    dry_run: bool
    messages: int = 0
    media_items: int = 0
    objects: int = 0
    stored_bytes: int = 0
    skipped_in_progress: int = 0
    outbound_objects: int = 0

    def summary(self) -> str:
        """One human line: what was (or would be) deleted."""
        verb = "would delete" if self.dry_run else "deleted"
        line = (
            f"{verb} {self.messages} message(s) received before {self.cutoff.isoformat()} with "
            f"{self.media_items} media item(s), {self.objects} object(s), "
            f"{self.stored_bytes} byte(s) of originals"
        )
        if self.outbound_objects:
            line += f", and {self.outbound_objects} prepared outbound file(s)"
        if self.skipped_in_progress:
            line += f"; skipped {self.skipped_in_progress} message(s) still being processed"
        return line


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or a bare number of days, as a timedelta."""
    match = _DURATION.fullmatch(text or "")
    if not match:
        raise ValueError(f"expected an age such as 30d, 12h or 2w (got {text!r})")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{_UNITS[unit]: amount})


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise), or an age ago such as ``24h``."""
    value = (text or "").strip()
    now = now or utcnow()
    if _DURATION.fullmatch(value) and not re.fullmatch(r"\d{8}", value):
        return now - parse_duration(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"expected a date (2024-05-01), a date-time (2024-05-01T12:00:00Z) or an age "
                f"(24h, 7d) (got {text!r})"
            ) from None
        moment = datetime(day.year, day.month, day.day)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def retention_cutoff(
    retention_days: int, older_than: timedelta | None = None, *, now: datetime | None = None
) -> datetime:
    """The moment before which messages are purged: `older_than` if given, else retention days."""
    if older_than is None:
        if retention_days <= 0:
            raise ConfigError(
                "nothing to purge: RECEIVER_RETENTION_DAYS is 0 (keep forever); set it, or pass "
                "--older-than (e.g. --older-than 90d)"
            )
        older_than = timedelta(days=retention_days)
    if older_than <= timedelta(0):
        raise ConfigError("--older-than must be a positive age such as 30d")
    return (now or utcnow()) - older_than


# -- reading the index ---------------------------------------------------------


def count_messages(
    index: MediaIndex, *, since: datetime | None = None, until: datetime | None = None
) -> int:
    """How many messages were received in [since, until)."""
    return index.count_messages(since=since, until=until)


def iter_messages(
    index: MediaIndex,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_size: int = 500,
) -> Iterator[MessageRecord]:
    """Messages received in [since, until), oldest first, each with its media items.

    Pages with a (received_at, sid) keyset, so rows deleted or added while the
    caller works never make a page repeat or skip a message.
    """
    after: tuple[datetime, str] | None = None
    while page := index.messages_after(after, since=since, until=until, limit=batch_size):
        yield from page
        after = (page[-1].received_at, page[-1].sid)


# -- deleting -------------------------------------------------------------------


def erase_message(index: MediaIndex, store: ObjectStore, message: MessageRecord) -> int:
    """Delete every object of `message`, then its rows; returns how many objects went.

    Objects go first: if the store fails (StorageError), the rows stay and the
    erasure can be retried; the other order could leave files nobody can find
    any more. Everything under the message's key prefixes goes, including
    objects the index never recorded (a crash between an upload and the
    index update), and so do recorded keys outside them.
    """
    try:
        prefixes: tuple[str, ...] = message_prefixes(message.account_sid, message.sid)
    except ValueError:
        # SIDs that cannot be part of a key: nothing was stored under such prefixes.
        log.warning("message %s: no key prefix for its SIDs; deleting known keys", message.sid)
        prefixes = ()
    deleted = 0
    for key in message.object_keys():
        if not key.startswith(prefixes):
            with contextlib.suppress(ValueError):  # a key no store could have written
                store.delete(key)
                deleted += 1
    for prefix in prefixes:
        deleted += store.delete_prefix(prefix)
    index.delete_message(message.sid)
    log.info("erased message %s and %d stored objects", message.sid, deleted)
    return deleted


def _in_progress(message: MessageRecord, now: datetime) -> bool:
    return any(
        item.lease_owner and item.lease_expires_at and item.lease_expires_at > now
        for item in message.media
    )


def purge(
    index: MediaIndex,
    store: ObjectStore,
    cutoff: datetime,
    *,
    dry_run: bool = True,
    batch_size: int = 200,
    progress: Progress | None = None,
    include_outbound: bool = True,
    now: datetime | None = None,
) -> PurgeReport:
    """Delete (or, by default, only count) messages received before `cutoff` and their objects.

    Objects go first, then rows, message by message; see the module notes on
    why that makes an interrupted purge safe to run again. Prepared outbound
    files are kept in month folders and go a whole month at a time, once the
    month ended before `cutoff`.
    """
    now = now or utcnow()
    counts = {"messages": 0, "media_items": 0, "objects": 0, "stored_bytes": 0, "skipped": 0}
    for message in iter_messages(index, until=cutoff, batch_size=batch_size):
        if _in_progress(message, now):
            counts["skipped"] += 1
        else:
            counts["messages"] += 1
            counts["media_items"] += len(message.media)
            counts["stored_bytes"] += sum(
                int(m.size_bytes or 0) for m in message.media if m.state == "stored"
            )
            if dry_run:
                counts["objects"] += len(message.object_keys())
            else:
                counts["objects"] += erase_message(index, store, message)
        if progress is not None:
            progress(1)
    outbound = purge_outbound(store, cutoff, dry_run=dry_run) if include_outbound else 0
    return PurgeReport(
        cutoff=cutoff,
        dry_run=dry_run,
        messages=counts["messages"],
        media_items=counts["media_items"],
        objects=counts["objects"],
        stored_bytes=counts["stored_bytes"],
        skipped_in_progress=counts["skipped"],
        outbound_objects=outbound,
    )


def outbound_months_before(store: ObjectStore, cutoff: datetime) -> list[str]:
    """Prefixes ``outbound/<yyyy>/<mm>/`` of months that ended before `cutoff`."""
    current = f"{cutoff:%Y}/{cutoff:%m}"
    months: set[str] = set()
    for key in store.iter_keys("outbound/"):
        parts = key.split("/")
        if (
            len(parts) >= 4
            and re.fullmatch(r"\d{4}", parts[1])
            and re.fullmatch(r"\d{2}", parts[2])
        ):
            month = f"{parts[1]}/{parts[2]}"
            if month < current:
                months.add(f"outbound/{month}/")
    return sorted(months)


def purge_outbound(store: ObjectStore, cutoff: datetime, *, dry_run: bool = True) -> int:
    """Delete (or count) prepared outbound files of months that ended before `cutoff`."""
    total = 0
    for prefix in outbound_months_before(store, cutoff):
        if dry_run:
            total += sum(1 for _ in store.iter_keys(prefix))
        else:
            total += store.delete_prefix(prefix)
    return total


# -- export ----------------------------------------------------------------------


def export_record(message: MessageRecord) -> dict[str, Any]:
    """One JSON-lines record: the message as the API shows it, with its media manifest."""
    record = message_json(message, include_params=False)
    record["media_manifest"] = [
        {
            "index": item.idx,
            "state": item.state,
            "storage_key": item.storage_key,
            "thumbnail_key": item.thumbnail_key,
            "detected_type": item.detected_type,
            "size_bytes": item.size_bytes,
            "sha256": item.sha256,
        }
        for item in message.media
    ]
    return record


def export(
    index: MediaIndex,
    out: TextIO,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Progress | None = None,
    batch_size: int = 500,
) -> int:
    """Write messages received in [since, until) to `out` as JSON lines; returns how many."""
    written = 0
    for message in iter_messages(index, since=since, until=until, batch_size=batch_size):
        out.write(json.dumps(export_record(message), ensure_ascii=False, sort_keys=True))
        out.write("\n")
        written += 1
        if progress is not None:
            progress(1)
    out.flush()
    return written
