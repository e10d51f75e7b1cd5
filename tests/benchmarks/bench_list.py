"""Benchmark: listing messages with filters and keyset pages, on SQLite and PostgreSQL.

    python tests/benchmarks/bench_list.py            # 100,000 messages, 300,000 media rows
    python tests/benchmarks/bench_list.py --quick    # 20,000 / 60,000, fewer repeats
    python tests/benchmarks/bench_list.py --backend sqlite

Rows are bulk-inserted with SQLAlchemy into a fresh index (a temporary SQLite
file; a fresh PostgreSQL database, dropped at the end). Each filter of
`GET /api/messages` is timed through the Flask test client (routing, auth,
query, JSON), at the first page and at a deep page reached by following
`next_cursor`, and the HTML list page too. The baseline, in the same run, is
the naive approach: `SELECT ... ORDER BY received_at DESC LIMIT 50 OFFSET n`
on a copy of the table without indexes. Target: every filter under 50 ms p99
at any depth.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import flask  # noqa: E402
from sqlalchemy import insert, select, text  # noqa: E402

from receiver.index.schema import media, messages  # noqa: E402
from receiver.web import auth  # noqa: E402
from tests.support.postgres import PG_HOST, PG_PORT, fresh_database, pg_available  # noqa: E402

API_TOKEN = "bench-api-token"
ACCOUNT = "AC" + "1" * 32
START = datetime(2024, 1, 1, tzinfo=UTC)
TARGET_MS = 50.0
PAGE = 50

WORDS = [
    "photo",
    "claim",
    "door",
    "car",
    "damage",
    "receipt",
    "invoice",
    "hello",
    "thanks",
    "please",
    "see",
    "attached",
    "the",
    "a",
    "of",
    "front",
    "rear",
    "window",
    "roof",
    "water",
    "leak",
    "order",
    "refill",
    "pharmacy",
    "contest",
    "entry",
    "delivery",
    "box",
]
KINDS = [
    ("image", 0.70),
    ("document", 0.10),
    ("video", 0.10),
    ("audio", 0.05),
    ("contact", 0.03),
    ("other", 0.02),
]
TYPES = {
    "image": "image/jpeg",
    "document": "application/pdf",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "contact": "text/vcard",
    "other": "application/zip",
}


@dataclass(frozen=True)
class Scenario:
    """One filter of the list."""

    name: str
    params: dict[str, str]


def scenarios(heavy: str, light: str) -> list[Scenario]:
    """The filters to time (each a real operator question)."""
    return [
        Scenario("no filter", {}),
        Scenario("from (busy sender)", {"from": heavy}),
        Scenario("from (quiet sender)", {"from": light}),
        Scenario("kind=image", {"kind": "image"}),
        Scenario("kind=video", {"kind": "video"}),
        Scenario("kind=contact", {"kind": "contact"}),
        Scenario("state=incomplete", {"state": "incomplete"}),
        Scenario("state=rejected (media)", {"state": "rejected"}),
        Scenario("since..until (1 day)", {"since": "2024-01-10", "until": "2024-01-10"}),
        Scenario("since (last 2 days)", {"since": "2024-01-29"}),
        Scenario("q=common word", {"q": "damage"}),
        Scenario("q=rare word", {"q": "zebra"}),
        Scenario("q=absent word", {"q": "no-such-word"}),
        Scenario("from+kind+q", {"from": heavy, "kind": "image", "q": "photo"}),
    ]


# -- data -----------------------------------------------------------------------


def make_rows(
    n_messages: int, media_per: int, seed: int = 7
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, str]:
    """Messages over 31 days from 2,000 senders (one busy one), 3 media each."""
    rng = random.Random(seed)
    senders = [f"+1555{n:07d}" for n in range(2000)]
    heavy, light = senders[0], senders[1999]
    span = 31 * 24 * 3600
    msgs: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    kinds, weights = zip(*KINDS, strict=True)
    media_id = 0
    for i in range(n_messages):
        sid = "MM" + hashlib.md5(f"{seed}-{i}".encode(), usedforsecurity=False).hexdigest()
        at = START + timedelta(seconds=rng.random() * span)
        roll = rng.random()
        if roll < 0.05:
            sender = heavy
        elif roll < 0.05 + 1 / n_messages * 20:
            sender = light
        else:
            sender = senders[rng.randrange(1, 1999)]
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.0005:
            body += " zebra"
        state_roll = rng.random()
        state = (
            "complete" if state_roll < 0.97 else ("incomplete" if state_roll < 0.99 else "pending")
        )
        msgs.append(
            {
                "sid": sid,
                "account_sid": ACCOUNT,
                "direction": "inbound",
                "from_addr": sender,
                "from_channel": "sms",
                "to_addr": "+15017122661",
                "to_channel": "sms",
                "body": body,
                "num_media": media_per,
                "params": json.dumps([["MessageSid", sid], ["From", sender], ["Body", body]]),
                "state": state,
                "received_at": at,
                "updated_at": at,
            }
        )
        for idx in range(media_per):
            media_id += 1
            kind = rng.choices(kinds, weights)[0]
            mstate = "stored"
            if state != "complete" and idx == 0:
                mstate = "failed" if state == "incomplete" else "pending"
            elif rng.random() < 0.03:
                mstate = "rejected"
            items.append(
                {
                    "id": media_id,
                    "message_sid": sid,
                    "idx": idx,
                    "url": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}/Media/ME{idx}",
                    "media_sid": f"ME{media_id:032d}",
                    "declared_type": TYPES[kind],
                    "detected_type": TYPES[kind],
                    "kind": kind,
                    "size_bytes": rng.randint(1000, 3_000_000),
                    "sha256": hashlib.sha256(str(media_id).encode()).hexdigest(),
                    "width": 1024 if kind == "image" else None,
                    "height": 768 if kind == "image" else None,
                    "facts": "{}",
                    "state": mstate,
                    "reason": "type_mismatch" if mstate == "rejected" else None,
                    "storage_key": f"media/{ACCOUNT}/{sid}/{idx}-ME{media_id}.bin"
                    if mstate == "stored"
                    else None,
                    "thumbnail_key": None,
                    "attempts": 1,
                    "created_at": at,
                    "updated_at": at,
                }
            )
    return msgs, items, heavy, light


def bulk_insert(engine: Any, msgs: list[dict[str, Any]], items: list[dict[str, Any]]) -> float:
    """Insert with SQLAlchemy executemany in batches, secondary indexes built after; seconds."""
    started = time.perf_counter()
    indexes = [
        index
        for table in (messages, media)
        for index in table.indexes
        if index._ddl_if is None or index._ddl_if.dialect == engine.dialect.name
    ]
    with engine.begin() as conn:
        for index in indexes:
            index.drop(conn, checkfirst=True)
        for start in range(0, len(msgs), 10_000):
            conn.execute(insert(messages), msgs[start : start + 10_000])
        for start in range(0, len(items), 20_000):
            conn.execute(insert(media), items[start : start + 20_000])
        if engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('media', 'id'), (SELECT max(id) FROM media))"
                )
            )
        for index in indexes:
            index.create(conn)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


# -- environment ------------------------------------------------------------------


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh database URL for `backend`; PostgreSQL databases are dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    with fresh_database(prefix="mmsr_bench_") as url:
        yield url


def make_app(db_url: str, tmp: Path) -> Any:
    from receiver import create_app
    from receiver.settings import Settings

    env = {
        "RECEIVER_DATA_DIR": str(tmp / "data"),
        "TWILIO_AUTH_TOKEN": "bench-auth-token",
        "RECEIVER_API_TOKEN": API_TOKEN,
        "RECEIVER_ADMIN_PASSWORD": "bench-admin",
        "RECEIVER_SECRET_KEY": "bench-secret",
        "RECEIVER_DATABASE_URL": db_url,
    }
    app = create_app(Settings.from_env(env))
    return app


# -- timing ------------------------------------------------------------------------


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()  # warm the caches and the statement cache
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def api_get(client: Any, params: dict[str, str]) -> dict[str, Any]:
    resp = client.get(
        "/api/messages", query_string=params, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    if resp.status_code != 200:
        raise RuntimeError(f"{params}: {resp.status_code} {resp.get_data(as_text=True)[:200]}")
    data: dict[str, Any] = resp.get_json()
    return data


def deep_cursor(client: Any, params: dict[str, str], hops: int) -> tuple[str | None, int]:
    """Follow next_cursor (200 rows a hop) up to `hops` times: the cursor and the rows it skips."""
    cursor = None
    skipped = 0
    for _ in range(hops):
        data = api_get(client, {**params, "limit": "200", **({"cursor": cursor} if cursor else {})})
        if not data["next_cursor"]:
            break
        cursor = data["next_cursor"]
        skipped += 200
    return cursor, skipped


def oldest_cursor(engine: Any) -> str:
    """The cursor a client holds just before the last page of the unfiltered list."""
    from receiver.index.queries import Cursor

    with engine.connect() as conn:
        at, sid = conn.execute(
            select(messages.c.received_at, messages.c.sid)
            .order_by(messages.c.received_at.asc(), messages.c.sid.asc())
            .offset(PAGE)
            .limit(1)
        ).one()
    return str(Cursor(at, sid).encode())


def has_search_index(engine: Any) -> bool:
    """Whether the index has the trigram text-search index (see schema.search_index_ddl)."""
    from receiver.index.db import has_search_index as present

    with engine.connect() as conn:
        return bool(present(conn))


def time_scenario(
    client: Any, engine: Any, sc: Scenario, repeats: int, depth: int, backend: str, indexed: bool
) -> list[str]:
    """One table row: first page, a deep page and the HTML page for one filter."""
    first = timed(lambda: api_get(client, sc.params), repeats)
    total = len(api_get(client, {**sc.params, "limit": "200"})["messages"])
    cursor, skipped = deep_cursor(client, sc.params, depth)
    if cursor:
        deep = timed(lambda: api_get(client, {**sc.params, "cursor": cursor}), repeats)
        deep_text = f"row {skipped:,}: {deep[0]:.1f} / {deep[1]:.1f}"
        worst = max(first[1], deep[1])
    else:
        deep_text = "(one page)"
        worst = first[1]
    if not sc.params:
        oldest = oldest_cursor(engine)
        last = timed(lambda: api_get(client, {"cursor": oldest}), repeats)
        deep_text += f"; last page: {last[0]:.1f} / {last[1]:.1f}"
        worst = max(worst, last[1])
    html = timed(lambda: client.get("/messages", query_string=sc.params), max(5, repeats // 2))
    search = ""
    if "q" in sc.params:
        search = " [trigram index]" if indexed else " [no index]"
    row = [
        backend,
        sc.name + search,
        f"{'200+' if total == 200 else total}",
        f"{first[0]:.1f} / {first[1]:.1f}",
        deep_text,
        f"{html[0]:.1f} / {html[1]:.1f}",
        "yes" if worst < TARGET_MS and html[1] < TARGET_MS else "NO",
    ]
    print("  " + " | ".join(row[1:]), flush=True)
    return row


def query_row(backend: str, label: str, figures: tuple[float, float]) -> list[str]:
    """One table row for a page read without HTTP (p50 / p99 ms), printed as it is made."""
    row = [
        backend,
        label,
        str(PAGE),
        f"{figures[0]:.1f} / {figures[1]:.1f}",
        "",
        "",
        "yes" if figures[1] < TARGET_MS else "NO",
    ]
    print("  " + " | ".join(row[1:]), flush=True)
    return row


def run_backend(
    backend: str, n_messages: int, repeats: int, depth: int, search_index: bool
) -> list[list[str]]:
    rows_out: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmpdir, database(backend, Path(tmpdir)) as url:
        tmp = Path(tmpdir)
        app = make_app(url, tmp)
        engine = app.extensions["receiver"].index.engine
        msgs, items, heavy, light = make_rows(n_messages, 3)
        seconds = bulk_insert(engine, msgs, items)
        print(
            f"[{backend}] inserted {len(msgs):,} messages and {len(items):,} media rows in {seconds:.1f} s",
            flush=True,
        )
        client = app.test_client()
        # A real login: sessions live in the index, a cookie alone opens nothing.
        with app.test_request_context():
            auth.start_session()
            values = dict(flask.session)
        with client.session_transaction() as sess:
            sess.update(values)
        indexed = has_search_index(engine)
        print(f"[{backend}] trigram search index: {'yes' if indexed else 'no'}", flush=True)
        # The bulk insert left this process with millions of objects a service
        # never holds; freezing them keeps full GC passes out of the timings.
        gc.collect()
        gc.freeze()
        all_scenarios = scenarios(heavy, light)
        for sc in all_scenarios:
            rows_out.append(time_scenario(client, engine, sc, repeats, depth, backend, indexed))
        if search_index and not indexed:
            from receiver.index.schema import search_index_ddl

            built = time.perf_counter()
            with engine.begin() as conn:
                for statement in search_index_ddl(backend):
                    conn.execute(text(statement))
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.execute(text("ANALYZE"))
            seconds = time.perf_counter() - built
            print(f"[{backend}] built the trigram search index in {seconds:.1f} s", flush=True)
            for sc in all_scenarios:
                if "q" in sc.params:
                    rows_out.append(
                        time_scenario(client, engine, sc, repeats, depth, backend, True)
                    )

        # The same page without HTTP and JSON, to compare like with like against the baseline.
        from receiver.index.queries import Cursor, MessageFilter, list_messages

        index = app.extensions["receiver"].index
        oldest = Cursor.decode(oldest_cursor(engine))
        for label, cur in (("first page", None), ("last page", oldest)):
            only = timed(lambda cur=cur: list_messages(index, MessageFilter(), cursor=cur), repeats)
            rows_out.append(query_row(backend, f"keyset query only (no HTTP), {label}", only))

        # Baseline: the tutorial query on an unindexed copy, with OFFSET paging.
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE messages_noidx AS SELECT * FROM messages"))
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("ANALYZE messages_noidx"))
        for offset in (0, depth * 200, n_messages - PAGE):

            def naive(offset: int = offset) -> None:
                with engine.connect() as conn:
                    conn.execute(
                        text(
                            "SELECT * FROM messages_noidx ORDER BY received_at DESC "
                            f"LIMIT {PAGE} OFFSET {offset}"
                        )
                    ).all()

            base = timed(naive, 5 if offset else repeats)
            rows_out.append(query_row(backend, f"BASELINE unindexed OFFSET {offset:,}", base))
        app.extensions["receiver"].close()
    return rows_out


def table(rows: list[list[str]]) -> str:
    head = [
        "db",
        "filter",
        "matches",
        "API page 1 p50/p99 ms",
        "API deep page p50/p99 ms",
        "HTML page 1 p50/p99 ms",
        f"p99<{TARGET_MS:.0f}ms",
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 messages, fewer repeats")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--search-index",
        action="store_true",
        help="build the trigram text-search index when the schema does not have it",
    )
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else 100_000
    repeats = 15 if args.quick else 25
    depth = 15 if args.quick else 50
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    started = time.perf_counter()
    rows: list[list[str]] = []
    for backend in backends:
        if backend == "postgresql" and not pg_available():
            print(f"PostgreSQL is not running on {PG_HOST}:{PG_PORT}; skipping it", flush=True)
            continue
        rows += run_backend(backend, n, repeats, depth, args.search_index)
    print()
    print(
        f"{n:,} messages, {3 * n:,} media rows; {repeats} timed requests per cell, 50 rows a page; "
        f"deep = after following next_cursor {depth} times with limit=200; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(table(rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    failed = [r for r in rows if r[-1] == "NO" and not r[1].startswith("BASELINE")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
