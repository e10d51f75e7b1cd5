"""Browser sessions held in the index, so that ending one ends it in every worker and host.

The signed cookie carries only a random session id. A request is logged in
when the index holds a record for that id which is neither idle past
`idle_seconds` nor older than `lifetime_seconds`, and which was opened with
the admin password that is configured now. Logout deletes the record;
`revoke_all` deletes every record, so each earlier cookie is worthless at
once, wherever it is replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update

from receiver.index.errors import translate_db_errors
from receiver.index.schema import browser_sessions

IDLE_SECONDS = 30 * 60
LIFETIME_SECONDS = 12 * 3600
#: `last_seen` is written at most this often: one write a minute, not one a request.
TOUCH_EVERY = 60.0


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def credential_fingerprint(secret_key: str, password: str) -> str:
    """Which admin password a session was opened with, without storing the password."""
    mac = hmac.new(secret_key.encode(), b"session-credential\0" + password.encode(), "sha256")
    return mac.hexdigest()


@dataclass(frozen=True)
class SessionRecord:
    """One open browser session."""

    username: str
    created: float
    last_seen: float


class SessionStore:
    """Opens, checks and ends browser sessions in the index (SQLite or PostgreSQL).

    `index` is the MediaIndex: its `begin()` queues SQLite writers on the
    index's writer lock. `clock` is injectable so expiry can be tested.
    """

    def __init__(
        self,
        index: Any,
        *,
        idle_seconds: float = IDLE_SECONDS,
        lifetime_seconds: float = LIFETIME_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.engine = index.engine
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds
        self.clock = clock

    def open(self, username: str, credential: str) -> str:
        """A new session for `username`; returns the id for the cookie (never stored as is)."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        with translate_db_errors(), self.index.begin() as conn:
            # Expired records go here, so the table holds only live sessions.
            conn.execute(delete(browser_sessions).where(self._expired(now)))
            conn.execute(
                browser_sessions.insert().values(
                    id=_digest(session_id),
                    username=username,
                    credential=credential,
                    created=now,
                    last_seen=now,
                )
            )
        return session_id

    def check(self, session_id: str, credential: str) -> SessionRecord | None:
        """The live session of `session_id`, or None (unknown, idle, too old, other password)."""
        if not session_id:
            return None
        key = _digest(session_id)
        now = self.clock()
        with translate_db_errors(), self.engine.connect() as conn:
            row = conn.execute(select(browser_sessions).where(browser_sessions.c.id == key)).first()
        if row is None:
            return None
        if (
            now - row.created >= self.lifetime_seconds
            or now - row.last_seen >= self.idle_seconds
            or now < row.created
            or not hmac.compare_digest(row.credential, credential)
        ):
            self.end(session_id)
            return None
        if now - row.last_seen >= TOUCH_EVERY:
            with translate_db_errors(), self.index.begin() as conn:
                conn.execute(
                    update(browser_sessions)
                    .where(browser_sessions.c.id == key)
                    .values(last_seen=now)
                )
        return SessionRecord(username=row.username, created=row.created, last_seen=now)

    def end(self, session_id: str) -> None:
        """End one session (logout)."""
        if not session_id:
            return
        with translate_db_errors(), self.index.begin() as conn:
            conn.execute(
                delete(browser_sessions).where(browser_sessions.c.id == _digest(session_id))
            )

    def revoke_all(self) -> int:
        """End every session; returns how many were open."""
        with translate_db_errors(), self.index.begin() as conn:
            result = conn.execute(delete(browser_sessions))
        return int(result.rowcount or 0)

    def count(self) -> int:
        """How many session records are held (live or not yet cleaned up)."""
        with translate_db_errors(), self.engine.connect() as conn:
            return len(conn.execute(select(browser_sessions.c.id)).all())

    def _expired(self, now: float) -> Any:
        return (browser_sessions.c.created <= now - self.lifetime_seconds) | (
            browser_sessions.c.last_seen <= now - self.idle_seconds
        )
