"""Scale-out: two `serve` and two `worker` processes on one PostgreSQL and one S3 bucket.

Messages with media are posted to both servers, some twice at once. Afterwards
every message and file exists exactly once, each file was downloaded exactly
once (the media server counts GETs per item), and the bucket holds exactly
the objects the index names, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.cluster import Cluster, deliver, plan_messages, verify, wait_drained
from tests.support.mediaserver import MediaServer

MESSAGES = 150


@pytest.fixture
def media() -> Iterator[MediaServer]:
    with MediaServer() as server:
        yield server


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.slow
def test_two_servers_two_workers_store_everything_exactly_once(
    tmp_path: Path, pg_url: str, moto_s3: Any, media: MediaServer
) -> None:
    bucket = moto_s3.new_bucket("scaleout")
    cluster = Cluster(
        tmp_path / "cluster",
        database_url=pg_url,
        storage_url=f"s3://{bucket}/receiver",
        s3_env=moto_s3.env(),
        media=media,
        extra_env={"RECEIVER_INLINE_DEADLINE": "1"},
    )
    planned = plan_messages(media, MESSAGES, duplicate_every=3)
    cluster.start()
    try:
        load = deliver(cluster.urls, planned, concurrency=16)
        index = cluster.index()
        wait_drained(index, timeout=120)
        result = verify(index, planned, media, moto_s3.client(), bucket, "receiver/")
        index.close()
    finally:
        cluster.stop()
    assert load.undelivered == [] and load.connection_errors == 0
    assert set(load.statuses) == {200}, load.statuses
    assert load.deliveries == MESSAGES + sum(p.duplicate for p in planned)
    assert result.messages_found == MESSAGES and result.messages_lost == []
    assert result.items_planned > MESSAGES  # most messages carry media
    assert result.items_stored == result.items_planned, result.items_not_stored
    assert result.items_lost == [] and result.objects_missing == []
    assert result.objects_corrupt == [] and result.objects_unexpected == []
    # Exactly one download per file: no item was processed twice.
    assert dict(result.fetches_per_item) == {1: result.items_planned}
