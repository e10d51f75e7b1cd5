"""The thumbnail queue against a real SQLite index and a real local store."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from receiver.inbound import derivatives as module
from receiver.inbound.derivatives import Derivatives
from receiver.inbound.pipeline import message_row
from receiver.index import MediaIndex
from receiver.storage.keys import media_key
from receiver.storage.local import LocalStore
from receiver.twilio.webhook import parse_inbound
from tests.support import samples
from tests.support.waiting import wait_for
from tests.support.webhooks import inbound_params, media_path, new_sid


@pytest.fixture
def index(tmp_path: Path) -> Iterator[MediaIndex]:
    opened = MediaIndex.open(f"sqlite:///{tmp_path}/index.db")
    yield opened
    opened.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "media")


@pytest.fixture
def derivatives(index: MediaIndex, store: LocalStore) -> Iterator[Derivatives]:
    made = Derivatives(index, store)
    yield made
    made.shutdown()


def stored_images(index: MediaIndex, store: LocalStore, count: int) -> list[tuple[int, str]]:
    """(media id, storage key) of `count` images stored as the pipeline stores them."""
    sid = new_sid()
    urls = [(f"http://media.test{media_path(sid, i)}", "image/jpeg") for i in range(count)]
    msg = parse_inbound(inbound_params(sid, media=urls))
    rows = index.insert_message(
        message_row(msg, None),
        [{"idx": ref.index, "url": ref.url} for ref in msg.media],
        lease_owner="test",
        lease_seconds=60,
    )
    assert rows is not None
    out = []
    for row in rows:
        key = media_key(msg.account_sid, sid, row.idx, None, "jpg")
        store.put_bytes(key, samples.jpeg(200 + row.idx, 150), content_type="image/jpeg")
        assert index.finish_media(row.id, "test", state="stored", kind="image", storage_key=key)
        out.append((row.id, key))
    return out


def thumbnail_keys(index: MediaIndex, items: list[tuple[int, str]]) -> list[str | None]:
    return [
        item.thumbnail_key if (item := index.get_media(media_id)) else None for media_id, _ in items
    ]


def test_thumbnails_wait_while_a_webhook_is_answering_then_are_recorded_together(
    derivatives: Derivatives,
    index: MediaIndex,
    store: LocalStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = stored_images(index, store, 3)
    batches: list[int] = []
    record = index.set_thumbnails

    def counted(pairs: list[tuple[int, str]]) -> None:
        batches.append(len(pairs))
        record(pairs)

    monkeypatch.setattr(index, "set_thumbnails", counted)
    with derivatives.answering():
        for media_id, key in items:
            derivatives.queue(media_id, key)
        time.sleep(0.3)
        assert thumbnail_keys(index, items) == [None] * 3
    assert wait_for(lambda: all(thumbnail_keys(index, items)))
    assert batches == [3]  # one transaction for the run of queued work
    for key in thumbnail_keys(index, items):
        assert key is not None
        with store.open(key) as fp:
            assert Image.open(fp).size[0] <= 320


def test_a_thumbnail_waits_at_most_derive_max_wait(
    derivatives: Derivatives,
    index: MediaIndex,
    store: LocalStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "DERIVE_MAX_WAIT", 0.2)
    (item,) = stored_images(index, store, 1)
    with derivatives.answering():
        derivatives.queue(*item)
        # Still answering, yet the thumbnail is made once its wait runs out.
        assert wait_for(lambda: all(thumbnail_keys(index, [item])), seconds=5)


def test_a_broken_image_is_logged_and_not_recorded(
    derivatives: Derivatives, index: MediaIndex, store: LocalStore
) -> None:
    (item,) = stored_images(index, store, 1)
    store.put_bytes(item[1], b"not an image", content_type="image/jpeg")
    derivatives.queue(*item)
    derivatives.shutdown(wait=True)
    assert thumbnail_keys(index, [item]) == [None]


def test_remake_missing_makes_old_missing_thumbnails_on_the_calling_thread(
    derivatives: Derivatives, index: MediaIndex, store: LocalStore
) -> None:
    items = stored_images(index, store, 2)
    derivatives.remake_missing(10, older_than=3600)
    assert thumbnail_keys(index, items) == [None, None]  # too recent: may still be queued
    derivatives.remake_missing(10, older_than=-1)
    assert all(thumbnail_keys(index, items))


def test_the_thumbnail_thread_runs_at_a_lower_priority(derivatives: Derivatives) -> None:
    niceness = derivatives.pool.submit(
        lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    ).result()
    assert niceness > os.getpriority(os.PRIO_PROCESS, 0)
