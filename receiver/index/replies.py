"""Inbox replies: who sent each one, and the stored files of a thread a reply may attach.

The author row is keyed by the reply's idempotency key (the outbound row's
key), written once before anything is sent: a resubmitted form keeps its first
author, and a refused reply still says who tried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from receiver.index.errors import translate_db_errors
from receiver.index.inbox import ThreadKey, inbound_of
from receiver.index.schema import media, messages, reply_authors, utcnow


@dataclass(frozen=True)
class Operator:
    """Who acts in the browser or through the API: a stable id and a display name."""

    id: str
    name: str


@dataclass(frozen=True)
class StoredFile:
    """A stored original of a thread's inbound message, offered as a reply attachment."""

    media_id: int
    message_sid: str
    received_at: datetime
    index: int
    kind: str | None
    detected_type: str | None
    size_bytes: int | None
    storage_key: str
    extension: str

    @property
    def filename(self) -> str:
        """A name for the prepared copy (Twilio shows it to the recipient)."""
        return f"media{self.media_id}.{self.extension}"


class ReplyIndex:
    """Reply authors and a thread's stored files, against one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        begin: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        self.engine = engine
        self._begin = begin or engine.begin

    def _insert(self) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(reply_authors)
        return sqlite.insert(reply_authors)

    @translate_db_errors
    def record_author(self, idempotency_key: str, operator: Operator, thread: ThreadKey) -> None:
        """Remember who sent the reply under this key (the first author stays)."""
        stmt = (
            self._insert()
            .values(
                idempotency_key=idempotency_key,
                operator_id=operator.id,
                operator_name=operator.name,
                thread=thread.encode(),
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
        )
        with self._begin() as conn:
            conn.execute(stmt)

    @translate_db_errors
    def authors(self, keys: Iterable[str | None]) -> dict[str, Operator]:
        """The author of each of these idempotency keys that has one."""
        wanted = sorted({k for k in keys if k})
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    reply_authors.c.idempotency_key,
                    reply_authors.c.operator_id,
                    reply_authors.c.operator_name,
                ).where(reply_authors.c.idempotency_key.in_(wanted))
            ).all()
        return {r[0]: Operator(r[1], r[2]) for r in rows}

    @translate_db_errors
    def stored_files(
        self, key: ThreadKey, *, ids: Iterable[int] | None = None, limit: int = 50
    ) -> list[StoredFile]:
        """The thread's stored originals, newest first (only `ids`, when given)."""
        stmt = (
            select(
                media.c.id,
                media.c.message_sid,
                messages.c.received_at,
                media.c.idx,
                media.c.kind,
                media.c.detected_type,
                media.c.size_bytes,
                media.c.storage_key,
            )
            .join(messages, messages.c.sid == media.c.message_sid)
            .where(*inbound_of(key), media.c.state == "stored", media.c.storage_key.is_not(None))
            .order_by(messages.c.received_at.desc(), media.c.idx)
            .limit(limit)
        )
        if ids is not None:
            stmt = stmt.where(media.c.id.in_(list(ids)))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            StoredFile(
                media_id=r[0],
                message_sid=r[1],
                received_at=r[2],
                index=r[3],
                kind=r[4],
                detected_type=r[5],
                size_bytes=r[6],
                storage_key=r[7],
                extension=_extension(r[7]),
            )
            for r in rows
        ]


def _extension(storage_key: str) -> str:
    """The file extension of a stored original: its key's, else a neutral one."""
    tail = storage_key.rsplit("/", 1)[-1]
    ext = tail.rsplit(".", 1)[-1] if "." in tail else ""
    return ext if ext.isalnum() and len(ext) <= 8 else "bin"
