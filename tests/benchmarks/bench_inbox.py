"""Benchmark: the inbox list and a thread's page at 100k messages in 10k threads.

    python tests/benchmarks/bench_inbox.py            # 100,000 messages, 10,000 threads
    python tests/benchmarks/bench_inbox.py --quick    # 20,000 / 2,000, fewer repeats
    python tests/benchmarks/bench_inbox.py --backend sqlite

Messages are bulk-inserted into a fresh index (a temporary SQLite file; a
fresh PostgreSQL database, dropped at the end): 70% inbound (40% of them with
one or two media items), 30% outbound replies, spread over 10k customers
and a year, then the thread summary is filled with `threads.rebuild` (the
start-up backfill; its time is printed). Timed, p50 / p99: `GET /inbox`
(first page and a page 100 pages deep, through the Flask test client:
routing, session, queries, template) and `GET /inbox/<thread>` for random
threads, plus the list query alone. One message in twenty more goes into one
of `threads / 20` Conversations conversations (three members each, one reply
in four ours), so pages list conversation threads too, and
`GET /inbox/<CH...>` is timed for random conversations. The baseline, in the
same run, is the list's previous shape: one GROUP BY over the union of
inbound and outbound messages per page. Target: under 50 ms p99.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import flask  # noqa: E402
from sqlalchemy import func, insert, literal, select, union_all  # noqa: E402

from receiver.index.inbox import (  # noqa: E402
    ThreadKey,
    _newest,
    _opted_out,
    decode_cursor,
    encode_cursor,
    list_threads,
)
from receiver.index.schema import (  # noqa: E402
    conversation_messages,
    conversation_participants,
    conversations,
    media,
    messages,
    outbound_messages,
)
from receiver.index.threads import customer_in, ours_in, ours_out, rebuild  # noqa: E402
from receiver.web import auth  # noqa: E402
from tests.benchmarks.bench_list import database, make_app, timed  # noqa: E402
from tests.support.postgres import pg_available  # noqa: E402

ACCOUNT = "AC" + "1" * 32
OURS = "+15017122661"
START = datetime(2025, 1, 1, tzinfo=UTC)
TARGET_MS = 50.0
PAGE = 30  # receiver.web.inbox.PAGE_SIZE
KINDS = ("image", "image", "video", "audio", "contact")


def make_rows(total: int, threads: int, seed: int = 11) -> tuple[list[dict[str, Any]], ...]:
    rnd = random.Random(seed)
    span = 365 * 86_400
    msgs: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    outs: list[dict[str, Any]] = []
    for n in range(total):
        at = START + timedelta(seconds=span * n / total + rnd.random())
        customer = f"+1555{rnd.randrange(threads):07d}"
        if rnd.random() < 0.7:
            sid = f"MM{n:032d}"
            count = rnd.choice((1, 2)) if rnd.random() < 0.4 else 0
            msgs.append(
                {
                    "sid": sid,
                    "account_sid": ACCOUNT,
                    "from_addr": customer,
                    "from_channel": "sms",
                    "to_addr": OURS,
                    "to_channel": "sms",
                    "body": "photos of the parcel",
                    "num_media": count,
                    "params": json.dumps([["MessageSid", sid]]),
                    "state": "complete",
                    "received_at": at,
                    "updated_at": at,
                }
            )
            for idx in range(count):
                items.append(
                    {
                        "message_sid": sid,
                        "idx": idx,
                        "url": f"https://api.twilio.com/m/{n}/{idx}",
                        "kind": rnd.choice(KINDS),
                        "detected_type": "image/jpeg",
                        "size_bytes": 200_000,
                        "state": "stored",
                        "storage_key": f"k/{sid}/{idx}",
                        "created_at": at,
                        "updated_at": at,
                    }
                )
        else:
            outs.append(
                {
                    "idempotency_key": f"reply:{n}",
                    "sid": f"SM{n:032d}",
                    "to_addr": customer,
                    "from_addr": OURS,
                    "body": "thanks, we are on it",
                    "media": "[]",
                    "status": "delivered",
                    "created_at": at,
                    "updated_at": at,
                }
            )
    return msgs, items, outs


def conversation_sid(n: int) -> str:
    return f"CH{n:032x}"


def make_conversations(total: int, count: int, seed: int = 13) -> tuple[list[dict[str, Any]], ...]:
    """`total` messages in `count` conversations: rows of messages, media (none),
    outbound_messages, conversations, conversation_participants, conversation_messages."""
    rnd = random.Random(seed)
    span = 365 * 86_400
    convs = [
        {
            "sid": conversation_sid(c),
            "account_sid": ACCOUNT,
            "chat_service_sid": "IS" + "2" * 32,
            "friendly_name": f"Job {c}",
            "removed": False,
            "created_at": START,
            "updated_at": START,
        }
        for c in range(count)
    ]
    people = [
        {
            "sid": f"MB{c:030d}{m:02d}",
            "conversation_sid": conversation_sid(c),
            "address": f"+1666{c:05d}{m:02d}",
            "proxy_address": OURS,
            "removed": False,
            "created_at": START,
            "updated_at": START,
        }
        for c in range(count)
        for m in range(3)
    ]
    msgs: list[dict[str, Any]] = []
    outs: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for n in range(total):
        at = START + timedelta(seconds=span * n / total + rnd.random())
        c = rnd.randrange(count)
        if rnd.random() < 0.25:
            outs.append(
                {
                    "idempotency_key": f"reply:conv:{n}",
                    "sid": f"IM{n:032d}",
                    "to_addr": conversation_sid(c),
                    "from_addr": None,
                    "body": "a technician is on the way",
                    "media": "[]",
                    "status": "sent",
                    "created_at": at,
                    "updated_at": at,
                }
            )
            continue
        sid = f"IM{n + total:032d}"
        author = f"+1666{c:05d}{rnd.randrange(3):02d}"
        msgs.append(
            {
                "sid": sid,
                "account_sid": ACCOUNT,
                "from_addr": author,
                "from_channel": "sms",
                "to_addr": conversation_sid(c),
                "to_channel": "conversations",
                "body": "roof photo",
                "num_media": 0,
                "params": json.dumps([["MessageSid", sid]]),
                "state": "complete",
                "received_at": at,
                "updated_at": at,
            }
        )
        links.append(
            {
                "message_sid": sid,
                "conversation_sid": conversation_sid(c),
                "author": author,
                "idx": n,
                "removed": False,
            }
        )
    return msgs, [], outs, convs, people, links


TABLES = (
    messages,
    media,
    outbound_messages,
    conversations,
    conversation_participants,
    conversation_messages,
)


def bulk_insert(engine: Any, rows: tuple[list[dict[str, Any]], ...]) -> float:
    """Insert the rows, then fill the summary as start-up does; the backfill's seconds."""
    with engine.begin() as conn:
        for table, batch in zip(TABLES, rows, strict=True):
            for i in range(0, len(batch), 5000):
                conn.execute(insert(table), batch[i : i + 5000])
    began = time.perf_counter()
    with engine.begin() as conn:
        rebuild(conn)
    seconds = time.perf_counter() - began
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("ANALYZE")
    return seconds


def group_by_page(engine: Any, limit: int = PAGE) -> list[Any]:
    """The baseline: the list's previous shape, every message grouped for each page,
    then each row's last message and opt-out read thread by thread."""
    inbound = select(
        ours_in().label("ours"),
        customer_in().label("customer"),
        messages.c.received_at.label("at"),
        literal(1).label("inbound"),
        literal(0).label("outbound"),
    )
    outbound = select(
        ours_out().label("ours"),
        outbound_messages.c.to_addr.label("customer"),
        outbound_messages.c.created_at.label("at"),
        literal(0).label("inbound"),
        literal(1).label("outbound"),
    ).where(ours_out().is_not(None))
    act = union_all(inbound, outbound).subquery("activity")
    last_at = func.max(act.c.at).label("last_at")
    key = (act.c.ours + "~" + act.c.customer).label("key")
    stmt = (
        select(act.c.ours, act.c.customer, last_at, func.sum(act.c.inbound))
        .group_by(act.c.ours, act.c.customer)
        .order_by(last_at.desc(), key.desc())
        .limit(limit + 1)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        return [
            (_newest(conn, ThreadKey(r[0], r[1]), 1), _opted_out(conn, ThreadKey(r[0], r[1])))
            for r in rows[:limit]
        ]


def get_ok(client: Any, path: str, query: dict[str, str] | None = None) -> None:
    resp = client.get(path, query_string=query or {})
    if resp.status_code != 200:
        raise RuntimeError(f"{path}: {resp.status_code} {resp.get_data(as_text=True)[:200]}")


def run_backend(backend: str, total: int, n_threads: int, repeats: int) -> list[list[str]]:
    out: list[list[str]] = []

    def row(label: str, fig: tuple[float, float], base: tuple[float, float] | None) -> None:
        worst = fig[1]
        out.append(
            [
                backend,
                label,
                f"{fig[0]:.1f} / {fig[1]:.1f}",
                f"{base[0]:.1f} / {base[1]:.1f}" if base else "",
                "yes" if worst < TARGET_MS else "NO",
            ]
        )
        print("  " + " | ".join(out[-1]), flush=True)

    with tempfile.TemporaryDirectory() as tmpdir, database(backend, Path(tmpdir)) as url:
        app = make_app(url, Path(tmpdir))
        index = app.extensions["receiver"].index
        n_conversations = max(1, n_threads // 20)
        group = make_conversations(total // 20, n_conversations)
        rows = tuple(
            a + b for a, b in zip((*make_rows(total, n_threads), [], [], []), group, strict=True)
        )
        seconds = bulk_insert(index.engine, rows)
        print(
            f"[{backend}] {len(rows[0]):,} inbound, {len(rows[2]):,} outbound, "
            f"{len(rows[1]):,} media, {n_conversations:,} conversations; "
            f"thread summary backfilled in {seconds:.1f} s",
            flush=True,
        )
        client = app.test_client()
        # A real login: sessions live in the index, a cookie alone opens nothing.
        with app.test_request_context():
            auth.start_session()
            values = dict(flask.session)
        with client.session_transaction() as sess:
            sess.update(values)
        gc.collect()
        gc.freeze()

        cursor = None
        for _ in range(100):
            page = list_threads(index, cursor=cursor, limit=PAGE)
            cursor = page.next_cursor
        deep = {"cursor": encode_cursor(cursor)} if cursor else {}
        rnd = random.Random(3)
        keys = [f"{OURS}~+1555{rnd.randrange(n_threads):07d}" for _ in range(200)]
        picks = iter(keys * (repeats + 2))
        groups = iter(
            [conversation_sid(rnd.randrange(n_conversations)) for _ in range(200)] * (repeats + 2)
        )

        base = timed(lambda: group_by_page(index.engine), max(3, repeats // 6))
        row("list query, first page", timed(lambda: list_threads(index, limit=PAGE), repeats), base)
        deep_cursor = decode_cursor(deep.get("cursor"))
        row(
            "list query, page 101",
            timed(lambda: list_threads(index, cursor=deep_cursor, limit=PAGE), repeats),
            None,
        )
        row("GET /inbox", timed(lambda: get_ok(client, "/inbox"), repeats), None)
        row("GET /inbox page 101", timed(lambda: get_ok(client, "/inbox", deep), repeats), None)
        row(
            "GET /inbox/<thread> (random)",
            timed(lambda: get_ok(client, f"/inbox/{next(picks)}"), repeats),
            None,
        )
        row(
            "GET /inbox/<CH...> (random)",
            timed(lambda: get_ok(client, f"/inbox/{next(groups)}"), repeats),
            None,
        )
        app.extensions["receiver"].close()
    return out


def table(rows: list[list[str]]) -> str:
    head = ["backend", "what", "p50 / p99 ms", "baseline p50 / p99 ms", "<50 ms"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args(argv)
    total, n_threads = (20_000, 2_000) if args.quick else (100_000, 10_000)
    repeats = 20 if args.quick else 60
    rows: list[list[str]] = []
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        if backend == "postgresql" and not pg_available():
            print("postgresql: not reachable on 127.0.0.1:5432, skipped", file=sys.stderr)
            continue
        rows += run_backend(backend, total, n_threads, repeats)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"inbox over {total:,} messages in {n_threads:,} threads (load average {load})")
    print("baseline: the previous list shape (GROUP BY over every message, per page)")
    print(table(rows))
    return 0 if all(r[-1] == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
