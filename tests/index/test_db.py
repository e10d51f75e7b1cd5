"""receiver.index.db: schema creation and upgrades."""

from __future__ import annotations

from receiver.index import MediaIndex
from tests.index.rows import media_rows, message


def test_schema_upgrade_is_repeatable(db_url: str) -> None:
    MediaIndex.open(db_url).close()
    again = MediaIndex.open(db_url)
    again.ping()
    again.close()


def test_a_version_1_sqlite_index_is_upgraded_in_place(tmp_path: object) -> None:
    import sqlite3
    from pathlib import Path

    from receiver.index.schema import SCHEMA_VERSION

    assert isinstance(tmp_path, Path)
    url = f"sqlite:///{tmp_path / 'index.db'}"
    first = MediaIndex.open(url)
    first.record_message(message(7, body="kept across the upgrade"), media_rows(1))
    first.close()
    # Make it look like a database written by schema version 1.
    conn = sqlite3.connect(tmp_path / "index.db")
    conn.executescript(
        "DROP INDEX ix_messages_received_body; DROP INDEX ix_media_state_message;"
        "DROP TRIGGER messages_fts_insert; DROP TRIGGER messages_fts_delete;"
        "DROP TRIGGER messages_fts_update; DROP TABLE messages_fts;"
        "DROP TRIGGER events_fan_out;"
        "UPDATE receiver_meta SET value = '1' WHERE key = 'schema_version';"
    )
    conn.commit()
    upgraded = MediaIndex.open(url)
    upgraded.close()
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    version = conn.execute(
        "SELECT value FROM receiver_meta WHERE key = 'schema_version'"
    ).fetchone()[0]
    found = conn.execute(
        "SELECT rowid FROM messages_fts WHERE messages_fts MATCH '\"across\"'"
    ).fetchall()
    conn.close()
    assert int(version) == SCHEMA_VERSION
    wanted = {"ix_messages_received_body", "ix_media_state_message", "messages_fts"}
    assert wanted | {"messages_fts_insert", "events_fan_out"} <= names
    # The search table was filled from the rows already there.
    assert len(found) == 1


def test_a_version_2_index_gets_the_price_columns_and_analytics_indexes(db_url: str) -> None:
    from sqlalchemy import inspect, text

    from receiver.index.rollups import drop_ddl
    from receiver.index.schema import SCHEMA_VERSION

    first = MediaIndex.open(db_url)
    with first.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO outbound_messages (to_addr, body, media, status, created_at, "
                "updated_at) VALUES ('+15558675310', 'kept', '[]', 'queued', "
                "'2024-05-01 10:00:00', '2024-05-01 10:00:00')"
            )
        )
        for name in (
            "ix_messages_received_keyword",
            "ix_outbound_created_figures",
            "ix_media_created_figures",
            "ix_outbound_to_created",
        ):
            conn.execute(text(f"DROP INDEX {name}"))
        for statement in drop_ddl(conn.dialect.name):  # a version 2 index had no roll-ups
            conn.execute(text(statement))
        conn.execute(text("ALTER TABLE outbound_messages DROP COLUMN price"))
        conn.execute(text("ALTER TABLE outbound_messages DROP COLUMN price_unit"))
        conn.execute(text("UPDATE receiver_meta SET value = '2' WHERE key = 'schema_version'"))
    first.close()
    upgraded = MediaIndex.open(db_url)
    try:
        with upgraded.engine.connect() as conn:
            found = inspect(conn)
            columns = {c["name"] for c in found.get_columns("outbound_messages")}
            indexes = {
                i["name"]
                for table in ("messages", "outbound_messages", "media")
                for i in found.get_indexes(table)
            }
            version = conn.execute(
                text("SELECT value FROM receiver_meta WHERE key = 'schema_version'")
            ).scalar_one()
            body = conn.execute(text("SELECT body FROM outbound_messages")).scalar_one()
    finally:
        upgraded.close()
    assert {"price", "price_unit"} <= columns
    assert {
        "ix_messages_received_keyword",
        "ix_outbound_created_figures",
        "ix_media_created_figures",
        "ix_outbound_to_created",
    } <= indexes
    assert int(version) == SCHEMA_VERSION and body == "kept"
