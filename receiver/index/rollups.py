"""Per-day roll-ups of the analytics figures, kept by database triggers.

Each roll-up row holds one day's sums (and one dimension: a price unit, a
media kind, a bulk batch), so a ten-year range reads a few thousand small
rows instead of every message (docs/design.md, "Analytics"). Triggers keep
them in the same statement as the change, whoever writes it: an INSERT adds
the row's contribution, a DELETE subtracts it, an UPDATE of a column that
counts does both. No workflow code takes part, and the write paths gain no
round trip. `rebuild` recomputes every roll-up from the rows (start-up
backfill of an older index, and the check that the triggers agree).

Prices are summed as integer micro-units, so adding and subtracting them
many times never drifts. Days are `YYYY-MM-DD` text on both databases.

On PostgreSQL a day's row would be one lock that every concurrent writer of
that day waits for until its commit, so each row is split into `PARTS`
parts by the writing backend (`pg_backend_pid() % PARTS`) and readers sum
the parts. SQLite has one writer at a time and keeps one part.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import delete, select, text
from sqlalchemy.engine import Connection

from receiver.index.schema import meta

#: receiver_meta key set once the roll-ups have been filled from older rows.
BACKFILLED = "rollups_backfilled"
#: receiver_meta key holding the digest of the installed triggers' DDL.
INSTALLED = "rollup_triggers"
#: Size buckets' upper bounds in bytes (receiver.index.analytics.SIZE_BUCKETS), then the rest.
SIZE_BOUNDS = (100_000, 1_000_000, 5_000_000)
#: Outbound statuses counted in each column (receiver.index.analytics.FUNNEL).
SENT = ("sent", "delivered", "undelivered", "read")
DELIVERED = ("delivered", "read")
MICROS = 1_000_000
PARTS = 16


@dataclass(frozen=True)
class Rollup:
    """One roll-up table fed by one source table.

    `keys` and `values` are SQL expressions over the row alias `R` (NEW, OLD,
    or the source table when rebuilding); `when` says which rows count.
    """

    table: str
    source: str
    keys: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, str], ...]
    when: str | None = None


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _in(column: str, members: tuple[str, ...]) -> str:
    return _flag(f"{column} IN ({', '.join(repr(m) for m in members)})")


def _day(column: str, dialect: str) -> str:
    # SQLite keeps the naive-UTC column as "YYYY-MM-DD HH:MM:SS.ffffff": the day is a prefix.
    if dialect == "postgresql":
        return f"to_char({column}, 'YYYY-MM-DD')"
    return f"substr({column}, 1, 10)"


def _batch(column: str, dialect: str) -> str:
    # Bulk rows are keyed "<batch>:<row>" (receiver.outbound.bulk.row_key); "" is single sends.
    if dialect == "postgresql":
        return f"CASE WHEN strpos({column}, ':') > 1 THEN split_part({column}, ':', 1) ELSE '' END"
    return (
        f"CASE WHEN instr({column}, ':') > 1 "
        f"THEN substr({column}, 1, instr({column}, ':') - 1) ELSE '' END"
    )


def _part(dialect: str) -> str:
    return f"pg_backend_pid() % {PARTS}" if dialect == "postgresql" else "0"


def _micros(column: str) -> str:
    return f"CASE WHEN {column} IS NULL THEN 0 ELSE CAST(round({column} * {MICROS}) AS BIGINT) END"


def rollups(dialect: str) -> list[Rollup]:
    """The roll-ups, with SQL for `dialect`."""
    sizes = []
    low = None
    for n, bound in enumerate((*SIZE_BOUNDS, None)):
        cond = ["R.size_bytes IS NOT NULL"]
        if low is not None:
            cond.append(f"R.size_bytes >= {low}")
        if bound is not None:
            cond.append(f"R.size_bytes < {bound}")
        sizes.append((f"size{n}", _flag(" AND ".join(cond))))
        low = bound
    return [
        Rollup(
            "daily_inbound",
            "messages",
            keys=(("day", _day("R.received_at", dialect)), ("part", _part(dialect))),
            values=(
                ("inbound", "1"),
                ("opt_outs", _flag("R.keyword = 'STOP'")),
                ("opt_ins", _flag("R.keyword = 'START'")),
            ),
        ),
        Rollup(
            "daily_outbound",
            "outbound_messages",
            keys=(
                ("day", _day("R.created_at", dialect)),
                ("unit", "COALESCE(R.price_unit, '')"),
                ("part", _part(dialect)),
            ),
            values=(
                ("outbound", "1"),
                ("sent", _in("R.status", SENT)),
                ("delivered", _in("R.status", DELIVERED)),
                ("undelivered", _in("R.status", ("undelivered",))),
                ("failed", _in("R.status", ("failed",))),
                ("price_micros", _micros("R.price")),
            ),
            # Twilio accepted it (it has a MessageSid): refused sends are not traffic.
            when="R.sid IS NOT NULL",
        ),
        Rollup(
            "daily_batches",
            "outbound_messages",
            keys=(
                ("batch", _batch("R.idempotency_key", dialect)),
                ("day", _day("R.created_at", dialect)),
                ("part", _part(dialect)),
            ),
            values=(("messages", "1"), ("price_micros", _micros("R.price"))),
            when="R.sid IS NOT NULL",
        ),
        Rollup(
            "daily_media",
            "media",
            keys=(
                ("kind", "COALESCE(R.kind, '')"),
                ("day", _day("R.created_at", dialect)),
                ("part", _part(dialect)),
            ),
            values=(("items", "1"), *sizes),
            # An item counts once its kind or size is known: until then it is in no figure,
            # and ingest's media rows (neither known yet) cost no roll-up write.
            when="R.kind IS NOT NULL OR R.size_bytes IS NOT NULL",
        ),
    ]


#: The source columns whose UPDATE changes a roll-up.
WATCHED = {
    "messages": ("received_at", "keyword"),
    "outbound_messages": ("created_at", "sid", "status", "price", "price_unit", "idempotency_key"),
    "media": ("created_at", "kind", "size_bytes"),
}


def _upsert(r: Rollup, row: str, sign: str) -> str:
    keys = ", ".join(k for k, _ in r.keys)
    columns = ", ".join([*(k for k, _ in r.keys), *(v for v, _ in r.values)])
    exprs = [e.replace("R.", f"{row}.") for _, e in r.keys]
    exprs += [f"{sign}({e.replace('R.', f'{row}.')})" for _, e in r.values]
    where = f" WHERE ({r.when.replace('R.', f'{row}.')})" if r.when else " WHERE true"
    sets = ", ".join(f"{v} = {r.table}.{v} + excluded.{v}" for v, _ in r.values)
    return (
        f"INSERT INTO {r.table} ({columns}) SELECT {', '.join(exprs)}{where} "
        f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"
    )


def drop_ddl(dialect: str) -> list[str]:
    """Statements that drop the roll-up triggers (SQLite refuses to alter a column they use)."""
    if dialect == "postgresql":
        return [f"DROP TRIGGER IF EXISTS rollup_{source} ON {source}" for source in WATCHED]
    return [
        f"DROP TRIGGER IF EXISTS rollup_{source}_{event}"
        for source in WATCHED
        for event in ("insert", "delete", "update")
    ]


def trigger_ddl(dialect: str) -> list[str]:
    """Statements that (re)create the roll-up triggers of `dialect`."""
    statements: list[str] = []
    for source, watched in WATCHED.items():
        mine = [r for r in rollups(dialect) if r.source == source]
        add = [_upsert(r, "NEW", "+") for r in mine]
        sub = [_upsert(r, "OLD", "-") for r in mine]
        name = f"rollup_{source}"
        if dialect == "postgresql":
            body = (
                "BEGIN\n"
                "IF TG_OP IN ('UPDATE', 'DELETE') THEN\n"
                + "".join(f"{s};\n" for s in sub)
                + "END IF;\n"
                "IF TG_OP IN ('INSERT', 'UPDATE') THEN\n"
                + "".join(f"{s};\n" for s in add)
                + "END IF;\nRETURN NULL;\nEND"
            )
            statements += [
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger "
                f"LANGUAGE plpgsql AS $body$\n{body}\n$body$",
                f"DROP TRIGGER IF EXISTS {name} ON {source}",
                f"CREATE TRIGGER {name} AFTER INSERT OR DELETE OR UPDATE OF "
                f"{', '.join(watched)} ON {source} FOR EACH ROW EXECUTE FUNCTION {name}()",
            ]
        else:
            # One condition for all of a table's roll-ups: it skips the trigger's program.
            whens = {r.when for r in mine}
            when = whens.pop() if len(whens) == 1 else None
            for event, parts, row in (
                ("INSERT", add, "NEW"),
                ("DELETE", sub, "OLD"),
                (f"UPDATE OF {', '.join(watched)}", sub + add, None),
            ):
                trigger = f"{name}_{event.split()[0].lower()}"
                guard = f" WHEN {when.replace('R.', f'{row}.')}" if when and row else ""
                statements += [
                    f"DROP TRIGGER IF EXISTS {trigger}",
                    f"CREATE TRIGGER {trigger} AFTER {event} ON {source}{guard} BEGIN "
                    + " ".join(f"{p};" for p in parts)
                    + " END",
                ]
    return statements


def rebuild(conn: Connection) -> None:
    """Recompute every roll-up from its source rows."""
    for r in rollups(conn.dialect.name):
        # A rebuilt row is one part (part 0): the sums are what readers see.
        exprs = [e.replace("R.", f"{r.source}.") for k, e in r.keys if k != "part"]
        sums = [f"SUM({e.replace('R.', f'{r.source}.')})" for _, e in r.values]
        where = f" WHERE ({r.when.replace('R.', f'{r.source}.')})" if r.when else ""
        columns = ", ".join(
            [*(k for k, _ in r.keys if k != "part"), "part", *(v for v, _ in r.values)]
        )
        # Every name and expression here is a constant of this module; no input reaches it.
        conn.execute(text(f"DELETE FROM {r.table}"))  # noqa: S608
        conn.execute(
            text(
                f"INSERT INTO {r.table} ({columns}) SELECT {', '.join([*exprs, '0', *sums])} "  # noqa: S608
                f"FROM {r.source}{where} GROUP BY {', '.join(exprs)}"
            )
        )


def uninstall(conn: Connection) -> None:
    """Drop the triggers: before schema migrations, which may alter the columns they read."""
    for statement in drop_ddl(conn.dialect.name):
        conn.execute(text(statement))


def install(conn: Connection, *, force: bool = False) -> None:
    """At start-up: create the triggers unless these very ones are in place (`force`: they
    were dropped), and fill the roll-ups once for older rows."""
    ddl = trigger_ddl(conn.dialect.name)
    digest = hashlib.sha256("\n".join(ddl).encode()).hexdigest()
    found = conn.execute(select(meta.c.value).where(meta.c.key == INSTALLED)).scalar()
    if force or found != digest:
        # Every worker opens the index: only a changed definition rewrites the schema.
        for statement in ddl:
            conn.execute(text(statement))
        conn.execute(delete(meta).where(meta.c.key == INSTALLED))
        conn.execute(meta.insert().values(key=INSTALLED, value=digest))
    if conn.execute(meta.select().where(meta.c.key == BACKFILLED)).first() is None:
        rebuild(conn)
        conn.execute(meta.insert().values(key=BACKFILLED, value="1"))
