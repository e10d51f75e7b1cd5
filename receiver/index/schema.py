"""Tables of the metadata index, shared by SQLite and PostgreSQL (SQLAlchemy Core)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = 4


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC on every backend and always returns an aware UTC datetime.

    SQLite has no time zones; keeping one convention makes comparisons and
    keyset cursors behave the same on both backends.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()


def _created_updated() -> tuple[Column[datetime], Column[datetime]]:
    """When a row was first written and last changed (`utcnow()`), never null."""
    return (
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )


def _removed() -> Column[bool]:
    """Set by Twilio's `on…Removed` events: the row is kept for the record."""
    return Column("removed", Boolean, nullable=False, default=False)


meta = Table(
    "receiver_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

messages = Table(
    "messages",
    metadata,
    Column("sid", String(34), primary_key=True),
    Column("account_sid", String(34), nullable=False),
    Column("messaging_service_sid", String(34)),
    Column("direction", String(16), nullable=False, default="inbound"),
    Column("from_addr", String(255), nullable=False),
    Column("from_channel", String(32), nullable=False),
    Column("to_addr", String(255), nullable=False),
    Column("to_channel", String(32), nullable=False),
    Column("body", Text, nullable=False, default=""),
    Column("num_media", Integer, nullable=False, default=0),
    Column("num_segments", Integer),
    Column("opt_out_type", String(16)),
    Column("keyword", String(16)),
    Column("params", Text, nullable=False),  # JSON list of [name, value] pairs as received
    # pending: media work outstanding; complete: every item stored or rejected;
    # incomplete: an item failed for good (retry budget spent).
    Column("state", String(16), nullable=False, default="pending"),
    Column("received_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_messages_received", messages.c.received_at, messages.c.sid)
Index("ix_messages_from_received", messages.c.from_addr, messages.c.received_at, messages.c.sid)
Index("ix_messages_state_received", messages.c.state, messages.c.received_at, messages.c.sid)
# Text search (`q`) walks this index newest first without reading the table. SQLite only:
# PostgreSQL caps B-tree entries at about 2.7 kB, and plans a sequential scan there instead.
Index("ix_messages_received_body", messages.c.received_at, messages.c.sid, messages.c.body).ddl_if(
    dialect="sqlite"
)

media = Table(
    "media",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "message_sid",
        String(34),
        ForeignKey("messages.sid", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("idx", Integer, nullable=False),
    Column("url", Text, nullable=False),
    Column("media_sid", String(34)),
    Column("declared_type", String(255)),
    Column("detected_type", String(255)),
    Column("kind", String(16)),
    Column("size_bytes", BigInteger),
    Column("sha256", String(64)),
    Column("width", Integer),
    Column("height", Integer),
    Column("frames", Integer),
    Column("animated", Boolean),
    Column("facts", Text),  # JSON: orientation, contact card, mismatch flag, format
    Column("state", String(16), nullable=False, default="pending"),
    Column("reason", String(32)),
    Column("detail", Text),
    Column("storage_key", Text),
    Column("thumbnail_key", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime),
    # Remote (Twilio) deletion after a verified copy: pending, done, failed.
    Column("remote_delete_state", String(16)),
    Column("remote_deleted_at", UTCDateTime),
    *_created_updated(),
    UniqueConstraint("message_sid", "idx", name="uq_media_message_idx"),
)
Index("ix_media_work", media.c.state, media.c.next_attempt_at)
Index("ix_media_kind_message", media.c.kind, media.c.message_sid)
# The `state` filter's EXISTS probe (messages with a stored/failed/rejected item).
Index("ix_media_state_message", media.c.state, media.c.message_sid)

opt_outs = Table(
    "opt_outs",
    metadata,
    Column("address", String(255), nullable=False),
    # The number or Messaging Service the keyword was sent to; "*" for all senders.
    Column("sender", String(255), nullable=False),
    Column("opted_out", Boolean, nullable=False),
    Column("keyword", String(32), nullable=False),
    Column("source", String(16), nullable=False),  # inbound, twilio-21610, manual
    Column("message_sid", String(34)),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("address", "sender", name="pk_opt_outs"),
)

outbound_messages = Table(
    "outbound_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(128), unique=True),
    Column("sid", String(34), unique=True),
    Column("account_sid", String(34)),
    Column("to_addr", String(255), nullable=False),
    Column("from_addr", String(255)),
    Column("messaging_service_sid", String(34)),
    Column("body", Text, nullable=False, default=""),
    Column("media", Text, nullable=False, default="[]"),  # JSON list of prepared items
    Column("fallback", String(16)),
    Column("status", String(20), nullable=False),
    Column("error_code", Integer),
    Column("error_message", Text),
    Column("raw_dlr_done_date", String(16)),
    *_created_updated(),
    # What Twilio billed, as its Message resource reports it once final (negative = charged).
    Column("price", Float),
    Column("price_unit", String(8)),
)
Index("ix_outbound_created", outbound_messages.c.created_at)

status_events = Table(
    "status_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_sid", String(34), nullable=False),
    Column("status", String(20), nullable=False),
    Column("error_code", Integer),
    Column("raw_dlr_done_date", String(16)),
    Column("params", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)
Index("ix_status_events_sid", status_events.c.message_sid)

# Events out (the transactional outbox, see docs/design.md "Events out"). An
# event row is written in the transaction of the change that causes it, with
# one delivery row per subscribed endpoint; `event_attempts` logs each try.
endpoints = Table(
    "endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("url", Text, nullable=False),
    # "*" for every type, else ",type,type," (a LIKE finds one type).
    Column("events", Text, nullable=False, default="*"),
    Column("secret", String(128), nullable=False),
    # After a rotation the old secret also signs until it expires.
    Column("previous_secret", String(128)),
    Column("previous_secret_expires_at", UTCDateTime),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("disabled_reason", Text),
    Column("description", Text, nullable=False, default=""),
    Column("source", String(16), nullable=False, default="api"),  # api, cli, env
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_success_at", UTCDateTime),
)

events = Table(
    "events",
    metadata,
    Column("id", String(40), primary_key=True),  # evt_<time-ordered>
    Column("type", String(32), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("data", Text, nullable=False),  # JSON
    Column("message_sid", String(34)),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("ix_events_created", events.c.created_at, events.c.id)
Index("ix_events_message", events.c.message_sid)

event_deliveries = Table(
    "event_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(40), ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column(
        "endpoint_id", String(40), ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False
    ),
    # pending (due at next_attempt_at), delivered, failed (retries spent),
    # abandoned (the endpoint was disabled).
    Column("state", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_owner", String(64)),
    Column("lease_until", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("last_response", Text),  # the first 1 KB of the answer
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    UniqueConstraint("event_id", "endpoint_id", name="uq_event_deliveries"),
)
Index("ix_event_deliveries_due", event_deliveries.c.state, event_deliveries.c.next_attempt_at)
Index("ix_event_deliveries_endpoint", event_deliveries.c.endpoint_id, event_deliveries.c.state)

event_attempts = Table(
    "event_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(40), ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("endpoint_id", String(40), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("status", Integer),
    Column("error", Text),
    Column("response", Text),  # the first 1 KB of the answer
    Column("duration_ms", Integer),
)
Index("ix_event_attempts_event", event_attempts.c.event_id)

# Browser sessions held on the server, so logout, a password change and
# `sessions revoke --all` end a session everywhere at once. `id` is the
# SHA-256 of the cookie's session id: a copy of the index opens no browser.
# Times are seconds since the epoch, from the store's injectable clock.
browser_sessions = Table(
    "browser_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("credential", String(64), nullable=False),
    Column("created", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

# Failed logins and API-token failures, shared by every worker and host:
# `account` is what was attacked ("admin" login, "api" token), `address` the
# client. Rows older than the throttle's window are deleted as new ones come.
auth_failures = Table(
    "auth_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account", String(64), nullable=False),
    Column("address", String(128), nullable=False),
    Column("at", Float, nullable=False),
)
Index(
    "ix_auth_failures_address", auth_failures.c.account, auth_failures.c.address, auth_failures.c.at
)
Index("ix_auth_failures_at", auth_failures.c.at)


# Conversations (group MMS and cross-channel threads), kept from the
# Conversations post-event webhooks. New tables need no migration:
# `create_all` adds them to an existing index at start-up.
conversations = Table(
    "conversations",
    metadata,
    Column("sid", String(34), primary_key=True),
    Column("account_sid", String(34), nullable=False),
    Column("chat_service_sid", String(34)),
    Column("messaging_service_sid", String(34)),
    Column("friendly_name", Text),
    Column("unique_name", Text),
    Column("state", String(16)),
    Column("attributes", Text),
    _removed(),
    *_created_updated(),
)

conversation_participants = Table(
    "conversation_participants",
    metadata,
    Column("sid", String(34), primary_key=True),
    Column("conversation_sid", String(34), nullable=False),
    Column("identity", Text),
    Column("address", String(255)),
    Column("proxy_address", String(255)),
    Column("projected_address", String(255)),
    _removed(),
    *_created_updated(),
)
Index("ix_participants_conversation", conversation_participants.c.conversation_sid)

# One row per Conversations message (IM…); the message itself, its body and
# its media are in `messages`/`media` like every inbound message.
conversation_messages = Table(
    "conversation_messages",
    metadata,
    Column(
        "message_sid",
        String(34),
        ForeignKey("messages.sid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("conversation_sid", String(34), nullable=False),
    Column("chat_service_sid", String(34)),
    Column("author", Text),
    Column("participant_sid", String(34)),
    Column("source", String(32)),
    Column("idx", Integer),
    Column("attributes", Text),
    _removed(),
)
Index(
    "ix_conversation_messages_idx",
    conversation_messages.c.conversation_sid,
    conversation_messages.c.idx,
)

# Per-participant delivery receipts (DY…) of Conversations messages, from the
# `onDeliveryUpdated` webhook or the Receipts resource
# (https://www.twilio.com/docs/conversations/delivery-receipts). Keyed by the
# receipt SID; the status only moves forward (sent < delivered < read). No
# foreign key: a receipt may come before (or without) its message's own event.
conversation_receipts = Table(
    "conversation_receipts",
    metadata,
    Column("sid", String(34), primary_key=True),
    Column("message_sid", String(34), nullable=False),
    Column("conversation_sid", String(34), nullable=False),
    Column("participant_sid", String(34)),
    Column("channel_message_sid", String(34)),
    Column("status", String(16), nullable=False),
    Column("error_code", Integer),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_receipts_message", conversation_receipts.c.message_sid)


# Event Streams deliveries, one row per CloudEvent `id` (the deduplication
# key: delivery is at least once). Unknown types are kept here for inspection.
stream_events = Table(
    "stream_events",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("type", String(128), nullable=False),
    Column("source", String(255)),
    Column("time", String(64)),
    Column("data", Text, nullable=False),
    # applied, kept (a type not acted on), error (see detail)
    Column("outcome", String(16)),
    Column("detail", Text),
    Column("received_at", UTCDateTime, nullable=False),
)
Index("ix_stream_events_received", stream_events.c.received_at)


# Perceptual hashes of stored images, one row per item (receiver.media.phash).
# The hash is also split into HASH_BANDS bands (22, 21 and 21 bits), each with its own
# index, so "within Hamming distance N" probes bands instead of scanning:
# docs/design.md ("Near-duplicate photos"). `hash` is the 64 bits as a signed
# BIGINT. A new table: `create_all` adds it to an existing index.
HASH_BANDS = 3
media_hashes = Table(
    "media_hashes",
    metadata,
    Column(
        "media_id",
        Integer,
        ForeignKey("media.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("hash", BigInteger, nullable=False),
    *(Column(f"band{i}", Integer, nullable=False) for i in range(HASH_BANDS)),
)
for _band in range(HASH_BANDS):
    Index(f"ix_media_hashes_band{_band}", media_hashes.c[f"band{_band}"])

# Browser-playable copies of audio and video (receiver.index.playable). A new
# table: `create_all` adds it to an existing index. `state` is pending, ready
# (the copy is at `storage_key`), original (the file plays as it is) or failed
# (`reason`, `detail`).
playable_media = Table(
    "playable_media",
    metadata,
    Column(
        "media_id",
        Integer,
        ForeignKey("media.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("state", String(16), nullable=False),
    Column("storage_key", Text),
    Column("content_type", String(64)),
    Column("size_bytes", BigInteger),
    Column("reason", String(32)),
    Column("detail", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_playable_media_state", playable_media.c.state, playable_media.c.updated_at)


# Text read from stored images by OCR (receiver.media.ocr), one row per item once read.
# `outcome` is done (`text` may be empty), timeout or failed (see `detail`), or
# reading while a process has claimed it; an item with a row is not read again.
# `message_sid` lets text search (`q`) find the message without a join through
# `media`. A new table: `create_all` adds it to an existing index.
media_text = Table(
    "media_text",
    metadata,
    Column(
        "media_id",
        Integer,
        ForeignKey("media.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "message_sid",
        String(34),
        ForeignKey("messages.sid", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("outcome", String(16), nullable=False),
    Column("text", Text, nullable=False, default=""),
    Column("languages", String(64), nullable=False),
    Column("detail", Text),
    Column("seconds", Float),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("ix_media_text_message", media_text.c.message_sid)


def search_index_ddl(dialect: str) -> list[str]:
    """Statements that create the trigram search index of `dialect` (idempotent).

    PostgreSQL: the pg_trgm extension (trusted since PostgreSQL 13, so the
    database owner may create it) and a GIN index. SQLite: an FTS5 trigram
    table over messages.body, kept in step by triggers, filled from the
    existing rows.
    """
    if dialect == "postgresql":
        return [
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            "CREATE INDEX IF NOT EXISTS ix_messages_body_trgm ON messages "
            "USING gin (body gin_trgm_ops)",
            "CREATE INDEX IF NOT EXISTS ix_media_text_trgm ON media_text "
            "USING gin (text gin_trgm_ops)",
        ]
    if dialect == "sqlite":
        return [
            "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5("
            "body, content='messages', content_rowid='rowid', tokenize='trigram')",
            "CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN "
            "INSERT INTO messages_fts(rowid, body) VALUES (new.rowid, new.body); END",
            "CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN "
            "INSERT INTO messages_fts(messages_fts, rowid, body) "
            "VALUES ('delete', old.rowid, old.body); END",
            "CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF body ON messages "
            "BEGIN INSERT INTO messages_fts(messages_fts, rowid, body) "
            "VALUES ('delete', old.rowid, old.body); "
            "INSERT INTO messages_fts(rowid, body) VALUES (new.rowid, new.body); END",
            "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
            # The same over the text of images (`media_text`, rowid = media_id).
            "CREATE VIRTUAL TABLE IF NOT EXISTS media_text_fts USING fts5("
            "text, content='media_text', content_rowid='media_id', tokenize='trigram')",
            "CREATE TRIGGER IF NOT EXISTS media_text_fts_insert AFTER INSERT ON media_text "
            "BEGIN INSERT INTO media_text_fts(rowid, text) VALUES (new.media_id, new.text); END",
            "CREATE TRIGGER IF NOT EXISTS media_text_fts_delete AFTER DELETE ON media_text "
            "BEGIN INSERT INTO media_text_fts(media_text_fts, rowid, text) "
            "VALUES ('delete', old.media_id, old.text); END",
            "CREATE TRIGGER IF NOT EXISTS media_text_fts_update AFTER UPDATE OF text "
            "ON media_text BEGIN INSERT INTO media_text_fts(media_text_fts, rowid, text) "
            "VALUES ('delete', old.media_id, old.text); "
            "INSERT INTO media_text_fts(rowid, text) VALUES (new.media_id, new.text); END",
            "INSERT INTO media_text_fts(media_text_fts) VALUES ('rebuild')",
        ]
    return []


def fan_out_ddl(dialect: str) -> list[str]:
    """Statements that make every inserted event's delivery rows, in the database.

    A trigger writes one pending `event_deliveries` row per enabled endpoint
    subscribed to the event's type, in the inserting transaction, so an event
    and its deliveries still commit together; the writer pays one statement per
    event batch instead of two (docs/design.md, "Events out"). `endpoint.test`
    events are delivered to their one endpoint by `EventOutbox.test_endpoint`.
    """
    if dialect == "postgresql":
        # A statement-level trigger with a transition table: one INSERT ... SELECT
        # per multi-row INSERT, not one per event.
        return [
            "CREATE OR REPLACE FUNCTION events_fan_out() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO event_deliveries "
            "(event_id, endpoint_id, state, attempts, next_attempt_at, created_at) "
            "SELECT e.id, p.id, 'pending', 0, e.created_at, e.created_at "
            "FROM new_events e JOIN endpoints p ON p.enabled "
            "AND (p.events = '*' OR p.events LIKE '%,' || e.type || ',%') "
            "WHERE e.type <> 'endpoint.test'; "
            "RETURN NULL; END $$",
            "CREATE OR REPLACE TRIGGER events_fan_out AFTER INSERT ON events "
            "REFERENCING NEW TABLE AS new_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION events_fan_out()",
        ]
    if dialect == "sqlite":
        return [
            "CREATE TRIGGER IF NOT EXISTS events_fan_out AFTER INSERT ON events "
            "WHEN new.type <> 'endpoint.test' BEGIN "
            "INSERT INTO event_deliveries "
            "(event_id, endpoint_id, state, attempts, next_attempt_at, created_at) "
            "SELECT new.id, p.id, 'pending', 0, new.created_at, new.created_at "
            "FROM endpoints p WHERE p.enabled "
            "AND (p.events = '*' OR p.events LIKE '%,' || new.type || ',%'); END",
        ]
    return []


def utcnow() -> datetime:
    """The current time, aware UTC: the only clock the index uses."""
    return datetime.now(UTC)


# Covering indexes of the analytics aggregates (`receiver.index.analytics`): a date range
# is read from the index alone, never from the wide rows (body, params, media JSON).
Index("ix_messages_received_keyword", messages.c.received_at, messages.c.keyword, messages.c.sid)
Index(
    "ix_outbound_created_figures",
    outbound_messages.c.created_at,
    outbound_messages.c.status,
    outbound_messages.c.sid,
    outbound_messages.c.price,
    outbound_messages.c.price_unit,
)
Index("ix_media_created_figures", media.c.created_at, media.c.kind, media.c.size_bytes)
# An inbox thread's replies (`receiver.index.inbox`).
Index("ix_outbound_to_created", outbound_messages.c.to_addr, outbound_messages.c.created_at)

# Who sent each inbox reply (`receiver.index.replies`): keyed by the outbound row's
# idempotency key, written before the row exists, so a refused reply keeps its author
# too. A side table, so named operator accounts need no change to `outbound_messages`.
reply_authors = Table(
    "reply_authors",
    metadata,
    Column("idempotency_key", String(128), primary_key=True),
    Column("operator_id", String(64), nullable=False),
    Column("operator_name", String(255), nullable=False),
    Column("thread", String(520), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# One row per inbox thread (`receiver.index.threads`), written by the same transaction
# as each message: the inbox list reads a page of it through `ix_thread_summary_last`
# instead of grouping every message. A new table: `create_all` adds it, and
# `threads.backfill_once` fills it from older messages at start-up.
thread_summary = Table(
    "thread_summary",
    metadata,
    # "<ours>~<customer>" (index/inbox.py): twice a channel (32), ":" and an address (255).
    Column("key", String(600), primary_key=True),
    Column("last_at", UTCDateTime, nullable=False),
    # The last message: an inbound MessageSid or an outbound row id.
    Column("last_sid", String(34)),
    Column("last_outbound_id", Integer),
    Column("inbound", Integer, nullable=False),
    Column("outbound", Integer, nullable=False),
)
Index("ix_thread_summary_last", thread_summary.c.last_at, thread_summary.c.key)

# Per-day roll-ups of the analytics figures (`receiver.index.rollups`), kept by triggers in
# the statement that changes a counted row. New tables: `create_all` adds them, and
# `rollups.install` fills them once from older rows at start-up.
daily_inbound = Table(
    "daily_inbound",
    metadata,
    Column("day", String(10), nullable=False),
    Column("part", Integer, nullable=False),  # rollups.PARTS: concurrent writers' own rows
    Column("inbound", Integer, nullable=False),
    Column("opt_outs", Integer, nullable=False),
    Column("opt_ins", Integer, nullable=False),
    PrimaryKeyConstraint("day", "part", name="pk_daily_inbound"),
    # Rows stored in key order (SQLite): a range is read without a lookup per row.
    sqlite_with_rowid=False,
)
daily_outbound = Table(
    "daily_outbound",
    metadata,
    Column("day", String(10), nullable=False),
    Column("unit", String(8), nullable=False),  # price_unit, "" when unknown
    Column("part", Integer, nullable=False),
    Column("outbound", Integer, nullable=False),
    Column("sent", Integer, nullable=False),
    Column("delivered", Integer, nullable=False),
    Column("undelivered", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("price_micros", BigInteger, nullable=False),
    PrimaryKeyConstraint("day", "unit", "part", name="pk_daily_outbound"),
    # Rows stored in key order (SQLite): a range is read without a lookup per row.
    sqlite_with_rowid=False,
)
# Keyed batch first: the ranking groups by batch along the key, without sorting.
daily_batches = Table(
    "daily_batches",
    metadata,
    Column("batch", String(128), nullable=False),  # "" for single sends
    Column("day", String(10), nullable=False),
    Column("part", Integer, nullable=False),
    Column("messages", Integer, nullable=False),
    Column("price_micros", BigInteger, nullable=False),
    PrimaryKeyConstraint("batch", "day", "part", name="pk_daily_batches"),
    # Rows stored in key order (SQLite): a range is read without a lookup per row.
    sqlite_with_rowid=False,
)
daily_media = Table(
    "daily_media",
    metadata,
    Column("kind", String(16), nullable=False),  # "" while unknown
    Column("day", String(10), nullable=False),
    Column("part", Integer, nullable=False),
    Column("items", Integer, nullable=False),
    # Items per size bucket (rollups.SIZE_BOUNDS), items of unknown size in none.
    *(Column(f"size{n}", Integer, nullable=False) for n in range(4)),
    PrimaryKeyConstraint("kind", "day", "part", name="pk_daily_media"),
    # Rows stored in key order (SQLite): a range is read without a lookup per row.
    sqlite_with_rowid=False,
)
