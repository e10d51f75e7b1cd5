"""Benchmark: the /analytics figures over 100k messages, on SQLite and PostgreSQL.

    python tests/benchmarks/bench_analytics.py            # 100,000 messages over ten years
    python tests/benchmarks/bench_analytics.py --quick    # 20,000, fewer repeats
    python tests/benchmarks/bench_analytics.py --backend sqlite

70% of the messages are inbound (40% of those with one or two media items,
1% STOP, 0.5% START), 30% outbound with statuses, error codes, prices and
bulk keys, spread evenly over ten years (the roll-up triggers fire on the
bulk insert as on any write). `receiver.index.analytics.analytics` is
timed for a range of 1 day, 30 days and 10 years. Two baselines, in the same
run: the previous shape, every figure grouped from the rows themselves
(`rollups=False`), and the loop the module avoids, the same range's rows
fetched and counted in Python. Target: 10 years under 300 ms p99.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select  # noqa: E402

from receiver.index import MediaIndex  # noqa: E402
from receiver.index.analytics import DateRange, analytics  # noqa: E402
from receiver.index.schema import media, messages, outbound_messages  # noqa: E402
from tests.benchmarks.bench_list import database  # noqa: E402
from tests.support.postgres import pg_available  # noqa: E402

ACCOUNT = "AC" + "1" * 32
LAST_DAY = date(2025, 12, 31)
YEARS_DAYS = 3652
TARGET_MS = 300.0
KINDS = ("image", "image", "image", "video", "audio", "contact", "document")
STATUSES = ("delivered",) * 8 + ("undelivered", "failed", "sent", "queued")
CODES = {"undelivered": 30003, "failed": 30007}


def make_rows(total: int, seed: int = 7) -> tuple[list[dict[str, Any]], ...]:
    rnd = random.Random(seed)
    start = datetime.combine(LAST_DAY, datetime.min.time(), tzinfo=UTC) - timedelta(
        days=YEARS_DAYS - 1
    )
    span = YEARS_DAYS * 86_400
    msgs: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    outs: list[dict[str, Any]] = []
    for n in range(total):
        at = start + timedelta(seconds=span * n / total + rnd.random())
        if rnd.random() < 0.7:
            sid = f"MM{n:032d}"
            roll = rnd.random()
            keyword = "STOP" if roll < 0.01 else "START" if roll < 0.015 else None
            count = rnd.choice((1, 2)) if rnd.random() < 0.4 else 0
            msgs.append(
                {
                    "sid": sid,
                    "account_sid": ACCOUNT,
                    "from_addr": f"+1555{rnd.randrange(10_000):07d}",
                    "from_channel": "sms",
                    "to_addr": "+15017122661",
                    "to_channel": "sms",
                    "body": keyword or "photo",
                    "num_media": count,
                    "keyword": keyword,
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
                        "size_bytes": int(rnd.lognormvariate(12, 1.5)),
                        "state": "stored",
                        "created_at": at,
                        "updated_at": at,
                    }
                )
        else:
            status = rnd.choice(STATUSES)
            outs.append(
                {
                    "idempotency_key": f"batch{rnd.randrange(40)}:{n}"
                    if rnd.random() < 0.6
                    else None,
                    "sid": f"SM{n:032d}",
                    "to_addr": "+15558675310",
                    "from_addr": "+15017122661",
                    "body": "offer",
                    "media": "[]",
                    "status": status,
                    "error_code": CODES.get(status),
                    "price": -0.0079 if status != "queued" else None,
                    "price_unit": "USD" if status != "queued" else None,
                    "created_at": at,
                    "updated_at": at,
                }
            )
    return msgs, items, outs


def bulk_insert(index: MediaIndex, rows: tuple[list[dict[str, Any]], ...]) -> None:
    msgs, items, outs = rows
    with index.engine.begin() as conn:
        for table, batch in ((messages, msgs), (media, items), (outbound_messages, outs)):
            for i in range(0, len(batch), 5000):
                conn.execute(insert(table), batch[i : i + 5000])
        conn.exec_driver_sql("ANALYZE")


def python_loop(index: MediaIndex, rng: DateRange) -> dict[str, dict[str, float]]:
    """The baseline: every row of the range fetched and counted in Python."""
    out: dict[str, dict[str, float]] = {}
    with index.engine.connect() as conn:
        for at, keyword in conn.execute(
            select(messages.c.received_at, messages.c.keyword).where(
                messages.c.received_at >= rng.start, messages.c.received_at < rng.end
            )
        ):
            entry = out.setdefault(at.date().isoformat(), {"inbound": 0, "stop": 0})
            entry["inbound"] += 1
            entry["stop"] += keyword == "STOP"
        for at, status, price in conn.execute(
            select(
                outbound_messages.c.created_at,
                outbound_messages.c.status,
                outbound_messages.c.price,
            ).where(
                outbound_messages.c.created_at >= rng.start,
                outbound_messages.c.created_at < rng.end,
            )
        ):
            entry = out.setdefault(at.date().isoformat(), {"inbound": 0, "stop": 0})
            entry[status] = entry.get(status, 0) + 1
            entry["cost"] = entry.get("cost", 0) - (price or 0)
        for (size,) in conn.execute(
            select(media.c.size_bytes)
            .select_from(media.join(messages, media.c.message_sid == messages.c.sid))
            .where(messages.c.received_at >= rng.start, messages.c.received_at < rng.end)
        ):
            out.setdefault("sizes", {}).setdefault(str((size or 0) // 1_000_000), 0)
    return out


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()  # warm caches and the statement cache
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(round(0.99 * (len(samples) - 1))))]
    return statistics.median(samples), p99


def run_backend(backend: str, total: int, repeats: int) -> list[list[str]]:
    rows_out: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp, database(backend, Path(tmp)) as url:
        index = MediaIndex.open(url)
        try:
            began = time.perf_counter()
            rows = make_rows(total)
            bulk_insert(index, rows)
            print(
                f"{backend}: {len(rows[0])} inbound, {len(rows[1])} media, {len(rows[2])} "
                f"outbound inserted in {time.perf_counter() - began:.1f} s",
                file=sys.stderr,
            )
            for label, days in (("1 day", 1), ("30 days", 30), ("10 years", YEARS_DAYS)):
                rng = DateRange(LAST_DAY - timedelta(days=days - 1), LAST_DAY)
                fig = timed(lambda rng=rng: analytics(index, rng), repeats)
                rows_fig = timed(
                    lambda rng=rng: analytics(index, rng, rollups=False), max(5, repeats // 2)
                )
                base = timed(lambda rng=rng: python_loop(index, rng), max(3, repeats // 3))
                ok = "ok" if fig[1] < TARGET_MS else "OVER"
                rows_out.append(
                    [
                        backend,
                        label,
                        f"{fig[0]:.1f}",
                        f"{fig[1]:.1f}",
                        f"{rows_fig[0]:.1f}",
                        f"{rows_fig[1]:.1f}",
                        f"{base[0]:.1f}",
                        f"{base[1]:.1f}",
                        ok,
                    ]
                )
        finally:
            index.close()
    return rows_out


def table(rows: list[list[str]]) -> str:
    head = [
        "backend",
        "range",
        "p50 ms",
        "p99 ms",
        "rows p50 ms",
        "rows p99 ms",
        "loop p50 ms",
        "loop p99 ms",
        "<300 ms",
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args(argv)
    total = 20_000 if args.quick else 100_000
    repeats = 10 if args.quick else 30
    rows: list[list[str]] = []
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        if backend == "postgresql" and not pg_available():
            print("postgresql: not reachable on 127.0.0.1:5432, skipped", file=sys.stderr)
            continue
        rows += run_backend(backend, total, repeats)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"analytics over {total:,} messages (load average {load}); baselines: "
        "rows = grouped from the rows (the previous shape), loop = counted in Python"
    )
    print(table(rows))
    return 0 if all(r[-1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
