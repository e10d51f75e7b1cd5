"""Read queries of the browser and the JSON API: filtered lists with keyset pagination.

Lists are ordered newest first by ``(received_at, sid)`` and paged with a
cursor that carries the last row's sort key, never with OFFSET, so page 2,000
costs what page 1 costs. Every filter is served by an index of
`receiver.index.schema` (``ix_messages_*`` for sender, state and dates; the
media indexes for kind and media state).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    union,
)
from sqlalchemy.engine import RowMapping

from receiver.index.core import IndexCore
from receiver.index.db import has_search_index
from receiver.index.errors import translate_db_errors
from receiver.index.messages import with_media
from receiver.index.records import MessageRecord
from receiver.index.schema import media, media_text, messages, outbound_messages
from receiver.index.similar import DEFAULT_MAX_DISTANCE, MAX_DISTANCE, Similar
from receiver.media.types import KINDS

Row = TypeVar("Row")

#: Message states (the message's own column).
MESSAGE_STATES = ("pending", "complete", "incomplete")
#: Media states a message can be filtered by ("has an item in this state").
MEDIA_STATES = ("stored", "rejected", "failed")
STATES = (*MESSAGE_STATES, *MEDIA_STATES)
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_QUERY_LENGTH = 200
MAX_ADDRESS_LENGTH = 255

#: Every string of this form is a valid cursor (documented in the OpenAPI file).
CURSOR_PATTERN = r"[0-9]{1,16}-[A-Za-z0-9]{1,64}"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MOMENT = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[Tt ](?P<h>[0-9]{2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,](?P<f>[0-9]{1,12}))?)?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?"
)
_CHANNEL = re.compile(r"[a-z]{2,16}")


class InvalidParameter(ValueError):
    """A list parameter that cannot be used; names the parameter and the fix."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


# -- parameters -----------------------------------------------------------------


@dataclass(frozen=True)
class MessageFilter:
    """What a message list is narrowed to; every field is optional."""

    from_addr: str | None = None
    channel: str | None = None
    kind: str | None = None
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    #: Messages with an image within DEFAULT_MAX_DISTANCE of this media item's.
    similar_to: int | None = None

    def as_params(self) -> dict[str, str]:
        """The filter as query parameters (for "next page" links)."""
        out: dict[str, str] = {}
        if self.from_addr:
            out["from"] = f"{self.channel}:{self.from_addr}" if self.channel else self.from_addr
        if self.kind:
            out["kind"] = self.kind
        if self.state:
            out["state"] = self.state
        if self.since:
            out["since"] = _iso(self.since)
        if self.until:
            out["until"] = _iso(self.until)
        if self.q:
            out["q"] = self.q
        if self.similar_to is not None:
            out["similar_to"] = str(self.similar_to)
        return out


@dataclass(frozen=True)
class Cursor:
    """The sort key of the last row of a page; the next page starts after it.

    As text: microseconds since 1970 (UTC), a dash, and the row's key, so any
    string that matches `CURSOR_PATTERN` is a usable cursor.
    """

    at: datetime
    key: str

    def encode(self) -> str:
        """The cursor as a URL-safe token."""
        micros = (self.at.astimezone(UTC) - EPOCH) // timedelta(microseconds=1)
        return f"{micros}-{self.key}"

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse a token made by `encode`; InvalidParameter("cursor") otherwise."""
        match = re.fullmatch(CURSOR_PATTERN, token) if token else None
        if match is None:
            raise InvalidParameter(
                "cursor",
                "cursor is malformed; pass the next_cursor value of a previous answer unchanged",
            )
        micros, _, key = token.partition("-")
        return cls(EPOCH + timedelta(microseconds=int(micros)), key)


@dataclass(frozen=True)
class Page(Generic[Row]):
    """One page of rows and the cursor of the next page (None on the last page)."""

    rows: list[Row]
    next_cursor: Cursor | None


def parse_limit(raw: str | None, *, default: int = DEFAULT_LIMIT) -> int:
    """`limit` as a whole number from 1 to MAX_LIMIT; InvalidParameter otherwise."""
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidParameter("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def parse_moment(name: str, raw: str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 / RFC 3339 date or date-time (UTC unless it has an offset).

    A bare date means the start of that day, or with `end_of_day` the start of
    the next one, so ``until=2024-05-01`` includes all of 1 May. Anything else
    raises InvalidParameter naming `name`.
    """
    if raw is None or raw == "":
        return None
    problem = InvalidParameter(
        name,
        f"{name} must be an ISO 8601 date or date-time, like 2024-05-01 or 2024-05-01T13:45:00Z",
    )
    match = _MOMENT.fullmatch(raw.strip()) if len(raw) <= 64 else None
    if match is None:
        raise problem
    try:
        day = date.fromisoformat(match["date"])
        if match["h"] is None:
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            if end_of_day:
                moment = (
                    moment + timedelta(days=1)
                    if day < date.max
                    else datetime.max.replace(tzinfo=UTC)
                )
            return moment
        # RFC 3339 allows a leap second (:60); it is the last instant of its minute here.
        second = min(int(match["s"] or 0), 59)
        micro = int((match["f"] or "0")[:6].ljust(6, "0")) if int(match["s"] or 0) < 60 else 999_999
        zone = UTC
        if match["tz"] and match["tz"] not in ("Z", "z"):
            sign = -1 if match["tz"][0] == "-" else 1
            digits = match["tz"][1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            zone = timezone(sign * offset)
        moment = datetime.combine(
            day, time(int(match["h"]), int(match["m"]), second, micro), tzinfo=zone
        )
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise problem from None


def parse_filter(params: dict[str, str | None]) -> MessageFilter:
    """A MessageFilter from query parameters (empty values mean "any")."""
    channel = None
    sender = (params.get("from") or "").strip() or None
    if sender:
        # A raw "+" in a query string decodes to a space: "?from=+1555" is meant.
        if sender[0].isdigit() and (params.get("from") or "").startswith(" "):
            sender = "+" + sender
        prefix, sep, rest = sender.partition(":")
        if sep and _CHANNEL.fullmatch(prefix.lower()) and rest:
            channel, sender = prefix.lower(), rest
        if len(sender) > MAX_ADDRESS_LENGTH or "\x00" in sender:
            raise InvalidParameter(
                "from",
                "from must be a sender address such as +15017122661 "
                f"(at most {MAX_ADDRESS_LENGTH} characters)",
            )
    kind = params.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise InvalidParameter("kind", f"kind must be one of {', '.join(KINDS)}")
    state = params.get("state") or None
    if state is not None and state not in STATES:
        raise InvalidParameter("state", f"state must be one of {', '.join(STATES)}")
    since = parse_moment("since", params.get("since"))
    until = parse_moment("until", params.get("until"), end_of_day=True)
    q = params.get("q") or None
    if q is not None:
        q = q.strip() or None
    if q is not None and (len(q) > MAX_QUERY_LENGTH or "\x00" in q):
        raise InvalidParameter("q", f"q must be text of at most {MAX_QUERY_LENGTH} characters")
    return MessageFilter(
        sender, channel, kind, state, since, until, q, _similar_to(params.get("similar_to"))
    )


def _similar_to(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"[1-9][0-9]{0,9}", raw) or int(raw) > 2**31 - 1:
        raise InvalidParameter("similar_to", "similar_to must be a media item id, like 42")
    return int(raw)


def parse_max_distance(raw: str | None) -> int:
    """`max_distance` (bits of 64) from 0 to MAX_DISTANCE; InvalidParameter otherwise."""
    if raw is None or raw == "":
        return DEFAULT_MAX_DISTANCE
    if not re.fullmatch(r"[0-9]{1,2}", raw) or int(raw) > MAX_DISTANCE:
        raise InvalidParameter(
            "max_distance", f"max_distance must be a whole number from 0 to {MAX_DISTANCE}"
        )
    return int(raw)


def parse_cursor(raw: str | None) -> Cursor | None:
    """The cursor parameter, or None for the first page."""
    return Cursor.decode(raw) if raw else None


# -- queries --------------------------------------------------------------------


def _conditions(flt: MessageFilter, dialect: str) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if flt.from_addr:
        conds.append(messages.c.from_addr == flt.from_addr)
    if flt.channel:
        conds.append(messages.c.from_channel == flt.channel)
    if flt.state in MESSAGE_STATES:
        conds.append(messages.c.state == flt.state)
    item: list[ColumnElement[bool]] = []
    if flt.kind:
        item.append(media.c.kind == flt.kind)
    if flt.state in MEDIA_STATES:
        item.append(media.c.state == flt.state)
    if item:
        conds.append(exists().where(media.c.message_sid == messages.c.sid, *item))
    if flt.since:
        conds.append(messages.c.received_at >= flt.since)
    if flt.until:
        conds.append(messages.c.received_at < flt.until)
    if flt.q:
        conds.append(_contains(messages.c.body, f"%{_escape_like(flt.q)}%", dialect))
    return conds


def _after(at_col: Any, key_col: Any, cursor: Cursor | None, dialect: str) -> ColumnElement[bool]:
    """Rows after the cursor in (at, key) descending order."""
    if cursor is None:
        return true()
    if dialect == "postgresql":
        # A row comparison is one index condition on (at, key) with a good row estimate.
        # Typed binds: a bare aware datetime would arrive as timestamptz and hide the index.
        return tuple_(at_col, key_col) < tuple_(
            literal(cursor.at, at_col.type), literal(cursor.key, key_col.type)
        )
    # The redundant `at <= c.at` gives SQLite an index range to start from, so a
    # deep page does not scan the rows before it.
    return and_(at_col <= cursor.at, or_(at_col < cursor.at, key_col < cursor.key))


@translate_db_errors
def list_messages(
    index: IndexCore,
    flt: MessageFilter,
    *,
    cursor: Cursor | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page[MessageRecord]:
    """Messages matching `flt`, newest first, after `cursor`, with their media items."""
    order = (messages.c.received_at.desc(), messages.c.sid.desc())
    after = _after(messages.c.received_at, messages.c.sid, cursor, index.dialect)
    if flt.similar_to is not None:
        after = and_(after, messages.c.sid.in_(_similar_sids(index, flt.similar_to)))
    conds = _conditions(flt, index.dialect)
    with index.engine.connect() as conn:
        if index.dialect == "postgresql":
            # psycopg prepares repeated statements and PostgreSQL then reuses a generic
            # plan that cannot see the cursor's position; plan each page for its values.
            conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        if flt.q:
            rows = _text_search(conn, flt, after, limit, index.dialect)
        else:
            stmt = select(messages).where(*conds, after).order_by(*order).limit(limit + 1)
            rows = conn.execute(stmt).mappings().all()
        more = len(rows) > limit
        records = with_media(conn, rows[:limit])
    last = records[-1] if more and records else None
    return Page(records, Cursor(last.received_at, last.sid) if last else None)


def _similar_sids(index: IndexCore, media_id: int) -> list[str]:
    # The band probes are not one SQL condition (the exact distance is checked in
    # Python), so the few matching messages are found first and filtered by SID.
    if not isinstance(index, Similar):
        return []
    found = index.similar_media(media_id) or []
    return sorted({item.message_sid for item in found})


# -- text search ------------------------------------------------------------------
# `q` is a case-insensitive substring, searched in two steps: see docs/design.md, "Text search".

#: Newest candidates checked with LIKE before collecting all matches.
SEARCH_WINDOW = 2000


def _sqlite_fts_ready(conn: Any, q: str) -> bool:
    # Trigrams need three characters; shorter text is matched by scanning.
    return len(q) >= 3 and has_search_index(conn)


def _text_search(
    conn: Any, flt: MessageFilter, after: ColumnElement[bool], limit: int, dialect: str
) -> Sequence[RowMapping]:
    """The newest messages whose body, or the text read in one of whose images, contains
    `flt.q`, in the two steps of docs/design.md."""
    others = _conditions(replace(flt, q=None), dialect)
    like = f"%{_escape_like(flt.q or '')}%"
    window = (
        select(messages)
        .where(*others, after)
        .order_by(messages.c.received_at.desc(), messages.c.sid.desc())
        .limit(SEARCH_WINDOW)
        .subquery()
    )
    # Text read in images (OCR) counts as the message's text; skipped while no image
    # has been read, since looking it up costs something for every candidate.
    images = conn.execute(select(media_text.c.media_id).limit(1)).first() is not None
    indexed = len(flt.q or "") >= 3 and (
        dialect == "postgresql" or (dialect == "sqlite" and _sqlite_fts_ready(conn, flt.q or ""))
    )
    narrow_body: list[ColumnElement[bool]] = []
    narrow_text: list[ColumnElement[bool]] = []
    if dialect == "sqlite" and indexed:
        phrase = '"' + (flt.q or "").replace('"', '""') + '"'
        fts = text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :phrase")
        in_images = text("SELECT rowid FROM media_text_fts WHERE media_text_fts MATCH :phrase")
        # The index narrows, LIKE on the row decides: the same answers as without it.
        narrow_body.append(literal_column("messages.rowid").in_(fts.bindparams(phrase=phrase)))
        narrow_text.append(media_text.c.media_id.in_(in_images.bindparams(phrase=phrase)))
    in_images_text = _contains(media_text.c.text, like, dialect)
    matches = _contains(window.c.body, like, dialect)
    if images and indexed:
        # The trigram index finds the few messages whose images match, once.
        sids = select(media_text.c.message_sid).where(*narrow_text, in_images_text)
        matches = or_(matches, window.c.sid.in_(sids))
    elif images:
        matches = or_(
            matches, exists().where(media_text.c.message_sid == window.c.sid, in_images_text)
        )
    recent = (
        select(window)
        .where(matches)
        .order_by(window.c.received_at.desc(), window.c.sid.desc())
        .limit(limit + 1)
    )
    rows = conn.execute(recent).mappings().all()
    if len(rows) > limit:
        return rows
    # Two arms, each served by its own trigram index (an OR across tables is not).
    in_body = select(messages.c.sid, messages.c.received_at).where(
        *others, after, *narrow_body, _contains(messages.c.body, like, dialect)
    )
    in_text = (
        select(messages.c.sid, messages.c.received_at)
        .join(media_text, media_text.c.message_sid == messages.c.sid)
        .where(*others, after, *narrow_text, in_images_text)
    )
    hits = (union(in_body, in_text) if images else in_body).cte("hits").prefix_with("MATERIALIZED")
    newest = (
        select(hits.c.sid)
        .order_by(hits.c.received_at.desc(), hits.c.sid.desc())
        .limit(limit + 1)
        .subquery()
    )
    stmt = (
        select(messages)
        .join(newest, newest.c.sid == messages.c.sid)
        .order_by(messages.c.received_at.desc(), messages.c.sid.desc())
    )
    found: Sequence[RowMapping] = conn.execute(stmt).mappings().all()
    return found


def _contains(column: Any, like: str, dialect: str) -> ColumnElement[bool]:
    # SQLite's LIKE already ignores ASCII case; lower() on every row only costs time.
    if dialect == "sqlite":
        return column.like(like, escape="\\")
    return column.ilike(like, escape="\\")


#: Kept importable by its old name; the records are built in `receiver.index.messages`.
attach_media = with_media


@translate_db_errors
def list_outbound(
    index: IndexCore, *, cursor: Cursor | None = None, limit: int = DEFAULT_LIMIT
) -> Page[dict[str, Any]]:
    """Outbound messages with their current delivery status, newest first."""
    key = outbound_messages.c.id
    at = outbound_messages.c.created_at
    cond: ColumnElement[bool] = true()
    if cursor is not None:
        if not cursor.key.isdigit():
            raise InvalidParameter("cursor", "cursor is malformed; use the link of a previous page")
        number = int(cursor.key)
        cond = and_(at <= cursor.at, or_(at < cursor.at, key < number))
    stmt = select(outbound_messages).where(cond).order_by(at.desc(), key.desc()).limit(limit + 1)
    with index.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings().all()]
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more and rows else None
    return Page(rows, Cursor(last["created_at"], str(last["id"])) if last else None)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
