"""Engine construction and schema upgrades for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from receiver.errors import ConfigError
from receiver.index.errors import translate_db_errors
from receiver.index.rollups import install as install_rollups
from receiver.index.rollups import uninstall as uninstall_rollups
from receiver.index.schema import (
    SCHEMA_VERSION,
    fan_out_ddl,
    meta,
    metadata,
    search_index_ddl,
)
from receiver.index.threads import backfill_once

log = logging.getLogger(__name__)


def _add_listing_indexes(conn: Connection) -> None:
    # `create_all` only creates indexes along with new tables, so an index
    # added to an existing table needs its own step (`ddl_if` still applies).
    wanted = {"ix_messages_received_body", "ix_media_state_message"}
    for table in (metadata.tables["messages"], metadata.tables["media"]):
        for index in table.indexes:
            if index.name in wanted:
                index.create(conn, checkfirst=True)


def _add_analytics(conn: Connection) -> None:
    # `create_all` leaves existing tables alone, so the price columns and the covering
    # indexes of the analytics aggregates are added here.
    have = {c["name"] for c in inspect(conn).get_columns("outbound_messages")}
    for name, ddl in (("price", "FLOAT"), ("price_unit", "VARCHAR(8)")):
        if name not in have:
            conn.execute(text(f"ALTER TABLE outbound_messages ADD COLUMN {name} {ddl}"))
    wanted = {
        "ix_messages_received_keyword",
        "ix_outbound_created_figures",
        "ix_media_created_figures",
        "ix_outbound_to_created",
    }
    for table in ("messages", "outbound_messages", "media"):
        for index in metadata.tables[table].indexes:
            if index.name in wanted:
                index.create(conn, checkfirst=True)


def _add_event_fan_out(conn: Connection) -> None:
    # Delivery rows are made by a trigger from here on; a process of an older
    # release would insert them a second time, so this is a schema version.
    for statement in fan_out_ddl(conn.dialect.name):
        conn.execute(text(statement))


# Upgrades from version N-1 to N, applied in order at start-up. Version 1 is
# the initial schema created by `metadata.create_all`. The trigram search
# index (version 2) is applied by `ensure_search_index` on every start-up,
# because it may need a privilege the first start did not have.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _add_listing_indexes,
    3: _add_analytics,
    4: _add_event_fan_out,
}


def make_engine(url: str) -> Engine:
    """An engine for `url`, tuned for several processes sharing one index."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        # WAL lets readers run beside one writer; the busy timeout makes
        # concurrent writers (several gunicorn workers) wait instead of failing.
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        database = make_url(url).database or ""
        if database and database != ":memory:" and "mode=memory" not in url:
            private_database_files(database)
            # One connection for each thread that may read at once (webhook
            # threads and media threads): a short pool makes reads queue for
            # a connection behind slow writes. SQLite connections are cheap.
            kwargs.update(pool_size=8, max_overflow=56, pool_timeout=30)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql+psycopg://"):
        kwargs.update(
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            pool_timeout=10,
            connect_args={"connect_timeout": 5},
        )
        return create_engine(url, **kwargs)
    raise ConfigError("RECEIVER_DATABASE_URL must start with sqlite:/// or postgresql://")


def private_database_files(database: str) -> None:
    """Create the SQLite file 0600 before SQLite does, and make an older one 0600.

    SQLite creates its -wal and -shm files with the mode of the main file, so
    they are private too, whatever the umask. Files of another owner are left
    alone (chmod would fail); the data directory (0700) still guards them.
    """
    if database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError:
        return  # a missing directory or a read-only file: SQLite reports it
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            os.chmod(database + suffix, 0o600)


def upgrade(engine: Engine) -> int:
    """Create missing tables and apply pending migrations; returns the schema version."""
    with translate_db_errors(what="cannot open the index", opening=True), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Serialise concurrent start-ups of several processes.
            conn.execute(text("SELECT pg_advisory_xact_lock(727272)"))
        metadata.create_all(conn, checkfirst=True)
        row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
        current = int(row[0]) if row else 0
        if current == 0:
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            _add_event_fan_out(conn)
            current = SCHEMA_VERSION
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"the index has schema version {current}, newer than this release "
                f"({SCHEMA_VERSION}); upgrade mms-receiver"
            )
        migrating = current < SCHEMA_VERSION
        if migrating:
            uninstall_rollups(conn)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            log.info("upgrading index schema to version %d", version)
            MIGRATIONS[version](conn)
        if current < SCHEMA_VERSION:
            conn.execute(
                meta.update()
                .where(meta.c.key == "schema_version")
                .values(value=str(SCHEMA_VERSION))
            )
        # A new table needs no schema version; its rows for older messages are made once.
        backfill_once(conn)
        install_rollups(conn, force=migrating)
    ensure_search_index(engine)
    return SCHEMA_VERSION


def ensure_search_index(engine: Engine) -> bool:
    """Create the trigram index behind text search (`q`) if it is missing.

    Search works without it, by scanning, so a database that refuses (a
    PostgreSQL role that may not create pg_trgm, a SQLite built without FTS5)
    gets a warning naming the fix instead of a failed start. Returns whether
    the index is in place.
    """
    statements = search_index_ddl(engine.dialect.name)
    if not statements:
        return False
    with engine.connect() as conn:
        if has_search_index(conn):
            return True
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(727273)"))
            for statement in statements:
                conn.execute(text(statement))
    except SQLAlchemyError as exc:
        log.warning(
            "text search will scan messages: the trigram index could not be created "
            "(%s); on PostgreSQL run `CREATE EXTENSION pg_trgm` as a superuser "
            "and restart",
            exc.__class__.__name__,
        )
        return False
    log.info("created the trigram text-search index")
    return True


def has_search_index(conn: Connection) -> bool:
    """Whether the trigram index of `search_index_ddl` exists in this database."""
    # Both indexes (message bodies, text of images): an index made before the second
    # existed gets it at the next start-up.
    if conn.dialect.name == "postgresql":
        query = (
            "SELECT count(*) FROM pg_indexes "
            "WHERE indexname IN ('ix_messages_body_trgm', 'ix_media_text_trgm')"
        )
    else:
        query = (
            "SELECT count(*) FROM sqlite_master "
            "WHERE type = 'table' AND name IN ('messages_fts', 'media_text_fts')"
        )
    return conn.execute(text(query)).scalar() == 2
