"""Deleting Twilio's copy of media once the stored copy is known to be intact."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from receiver.index import MediaIndex
from receiver.storage.base import ObjectStore

__all__ = ["RemoteDeleter", "delete_remote_copies"]

log = logging.getLogger(__name__)

RemoteDeleter = Callable[[str, str, str], None]
"""Deletes one Twilio Media resource: (account SID, message SID, media SID)."""


def delete_remote_copies(
    index: MediaIndex, store: ObjectStore, deleter: RemoteDeleter, limit: int = 50
) -> int:
    """Delete Twilio's copy of stored items whose stored copy reads back intact.

    The stored object is read back and its SHA-256 compared with the one
    computed while downloading; only then is the Twilio Media resource
    deleted. Failures are recorded and retried on the next sweep. Returns how
    many were deleted.
    """
    done = 0
    for row in index.remote_deletions_due(limit):
        if not row.media_sid or not row.storage_key:
            index.set_remote_delete(row.id, "skipped")
            continue
        try:
            if _sha256_of(store, row.storage_key) != row.sha256:
                log.error(
                    "stored copy of media %s does not match its SHA-256; keeping Twilio's copy",
                    row.id,
                )
                index.set_remote_delete(row.id, "mismatch")
                continue
            deleter(str(row.account_sid), row.message_sid, row.media_sid)
        except Exception as exc:
            log.warning("remote deletion of media %s failed (will retry): %s", row.id, exc)
            index.set_remote_delete(row.id, "failed")
            continue
        index.set_remote_delete(row.id, "done")
        done += 1
    return done


def _sha256_of(store: ObjectStore, key: str) -> str:
    """SHA-256 of a stored object, read back in chunks."""
    digest = hashlib.sha256()
    with store.open(key) as fp:
        while chunk := fp.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
