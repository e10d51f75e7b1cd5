"""The reliability suite's "events" area: a business's receiver down while messages arrive.

2 serve + 2 worker processes on PostgreSQL deliver events to a real receiver
process that verifies each body with the `standardwebhooks` library. The
receiver is down while the messages arrive; the secret is rotated in the
middle of the burst; a worker is killed with SIGKILL while the backlog
drains; a second endpoint is removed before any traffic. Then: every event
delivered, verified with one of the two secrets, once per webhook-id, none
to the removed endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from receiver.events.signing import new_secret
from tests.reliability.cluster import (
    Cluster,
    PrivatePostgres,
    deliver,
    plan_messages,
    wait_drained,
)
from tests.support.hookserver import HookServer
from tests.support.mediaserver import MediaServer
from tests.support.s3server import MotoS3Server


@dataclass
class EventFigures:
    """What the events area measured."""

    messages: int = 0
    created: int = 0
    delivered: int = 0
    lost: int = 0
    unverified: int = 0
    redeliveries: int = 0  # the same webhook-id more than once (deduplicated by receivers)
    duplicates_after_dedup: int = 0  # one change under two webhook-ids
    removed_endpoint_received: int = 0
    outage_seconds: float = 0.0
    drain_seconds: float = 0.0
    failed: int = 0
    pg_restarted: bool = False


def _identity(record: dict[str, Any]) -> tuple[Any, ...]:
    """What one change is, whatever its webhook-id: its type and the object it is about."""
    data = record["body"].get("data", {})
    key = data.get("id") if str(record["type"]).startswith("media.") else data.get("sid")
    return (record["type"], key, data.get("address"), data.get("status"))


def run_events(
    work: Path,
    messages: int,
    outage: float,
    moto: MotoS3Server,
    database: Callable[[], AbstractContextManager[tuple[str, PrivatePostgres | None]]],
) -> EventFigures:
    """Run the scenario; the figures. `database` gives a URL and, when it can, a
    server to restart while the backlog drains."""
    figures = EventFigures()
    receiver = HookServer(log=work / "events-received.jsonl")
    removed_receiver = HookServer(log=work / "events-removed.jsonl")
    removed_receiver.start()
    with database() as (db, pg), MediaServer() as media:
        bucket = moto.new_bucket("events")
        cluster = Cluster(
            work / "events",
            database_url=db,
            storage_url=f"s3://{bucket}/receiver",
            s3_env=moto.env(),
            media=media,
            extra_env={
                "RECEIVER_EVENT_HOSTS": f"127.0.0.1:{receiver.port},127.0.0.1:{removed_receiver.port}",
                "RECEIVER_EVENT_RETRY_SCHEDULE": ",".join(["1"] * 200),
                "RECEIVER_FETCH_DEADLINE": "3",
                "RECEIVER_LEASE_SECONDS": "5",
            },
        )
        planned = plan_messages(media, messages, duplicate_every=4, max_media=2)
        figures.messages = len(planned)
        cluster.start()
        index = cluster.index()
        try:
            old = new_secret()
            endpoint = index.add_endpoint(receiver.url + "/hooks", secret=old)
            gone = index.add_endpoint(removed_receiver.url + "/hooks", secret=new_secret())
            index.remove_endpoint(gone.id)
            started = time.monotonic()
            half = len(planned) // 2
            deliver(cluster.urls, planned[:half], concurrency=8)
            new = new_secret()  # rotated in the middle of the burst
            index.rotate_secret(endpoint.id, new, overlap=timedelta(hours=24))
            deliver(cluster.urls, planned[half:], concurrency=8)
            wait_drained(index, 120)
            time.sleep(max(0.0, outage - (time.monotonic() - started)))
            figures.outage_seconds = time.monotonic() - started
            receiver.start(secrets=[new, old])
            back = time.monotonic()
            time.sleep(0.5)
            cluster.workers[0].kill()  # mid-drain; its claims expire and are retried
            time.sleep(1)
            cluster.workers[0].start()
            if pg is not None:
                pg.stop()  # PostgreSQL restarted during delivery
                time.sleep(1)
                pg.start()
                figures.pg_restarted = True
            deadline = time.monotonic() + 180
            while index.list_events(state="pending", limit=1):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            figures.drain_seconds = time.monotonic() - back
            events = index.list_events(limit=1_000_000)
            figures.failed = len(index.list_events(state="failed", limit=1_000_000))
        finally:
            index.close()
            cluster.stop()
            receiver.stop()
            removed_receiver.stop()
    got = receiver.received()
    ids = {e.id for e in events}
    received_ids = {r["id"] for r in got}
    figures.created = len(ids)
    figures.delivered = len(ids & received_ids)
    figures.lost = len(ids - received_ids)
    figures.unverified = sum(r["verified_with"] is None for r in got)
    figures.redeliveries = len(got) - len(received_ids)
    by_change: dict[tuple[Any, ...], set[str]] = {}
    for record in got:
        by_change.setdefault(_identity(record), set()).add(record["id"])
    figures.duplicates_after_dedup = sum(len(v) - 1 for v in by_change.values())
    figures.removed_endpoint_received = len(removed_receiver.received())
    return figures
