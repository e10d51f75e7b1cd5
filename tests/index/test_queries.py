"""receiver.index.queries on SQLite and PostgreSQL: filtered lists as records, keyset pages."""

from __future__ import annotations

from datetime import timedelta

import pytest

from receiver.index import MediaIndex, MessageRecord
from receiver.index.queries import (
    SEARCH_WINDOW,
    InvalidParameter,
    MessageFilter,
    list_messages,
    parse_cursor,
    parse_filter,
)
from receiver.index.schema import utcnow
from tests.index.rows import media_rows, message, sid


def seed(index: MediaIndex, count: int) -> list[str]:
    """`count` messages a minute apart, oldest first; even ones have an image."""
    start = utcnow() - timedelta(hours=1)
    for n in range(count):
        items = media_rows(1) if n % 2 == 0 else []
        stored = index.insert_message(
            message(n, received_at=start + timedelta(minutes=n), num_media=len(items)),
            items,
            lease_owner="w",
            lease_seconds=60,
        )
        for item in stored or []:
            index.finish_media(item.id, "w", state="stored", kind="image")
    return [sid(n) for n in range(count)]


def every_page(index: MediaIndex, flt: MessageFilter, limit: int) -> list[MessageRecord]:
    out: list[MessageRecord] = []
    cursor = None
    while True:
        page = list_messages(index, flt, cursor=cursor, limit=limit)
        assert len(page.rows) <= limit
        out.extend(page.rows)
        if page.next_cursor is None:
            return out
        cursor = parse_cursor(page.next_cursor.encode())


def test_pages_are_newest_first_records_with_their_media(index: MediaIndex) -> None:
    sids = seed(index, 7)
    whole = every_page(index, MessageFilter(), limit=3)
    assert [m.sid for m in whole] == sids[::-1]
    assert all(isinstance(m, MessageRecord) for m in whole)
    assert [len(m.media) for m in whole] == [m.num_media for m in whole]
    assert {item.message_sid for m in whole for item in m.media} == set(sids[::2])


def test_filters_narrow_every_page(index: MediaIndex) -> None:
    sids = seed(index, 6)
    with_images = every_page(index, parse_filter({"kind": "image"}), limit=2)
    assert [m.sid for m in with_images] == sids[::2][::-1]
    found = every_page(index, parse_filter({"q": "MESSAGE 3"}), limit=2)
    assert [m.sid for m in found] == [sids[3]]
    assert every_page(index, parse_filter({"from": "+15559999999"}), limit=2) == []


def test_search_beyond_the_window_finds_old_rare_text(index: MediaIndex) -> None:
    # Rare text further back than SEARCH_WINDOW messages takes the second step.
    assert SEARCH_WINDOW > 0
    index.record_message(message(1, body="needle", received_at=utcnow() - timedelta(days=9)), [])
    page = list_messages(index, parse_filter({"q": "needle"}), limit=5)
    assert [m.sid for m in page.rows] == [sid(1)] and page.next_cursor is None


def test_bad_parameters_name_themselves() -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_filter({"kind": "hologram"})
    assert caught.value.parameter == "kind"
    with pytest.raises(InvalidParameter) as cursor:
        parse_cursor("not a cursor")
    assert cursor.value.parameter == "cursor"
