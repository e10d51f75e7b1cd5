"""receiver.index.texts on SQLite and PostgreSQL: OCR text recorded, claimed once, searched by `q`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update

from receiver.index import MediaIndex
from receiver.index.db import ensure_search_index, has_search_index
from receiver.index.queries import MessageFilter, list_messages
from receiver.index.schema import media, media_text, messages
from receiver.index.serialize import media_json
from receiver.index.texts import READING, ReadText
from tests.index.rows import media_rows, message, sid

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def seed(index: MediaIndex, count: int) -> list[int]:
    """`count` messages with one stored image each; their media ids, oldest first."""
    for n in range(count):
        index.record_message(
            message(n, body=f"photo {n}", received_at=START + timedelta(minutes=n), num_media=1),
            media_rows(1),
        )
    with index.engine.begin() as conn:
        conn.execute(update(media).values(state="stored", kind="image", storage_key="k"))
    return [index.media_of(sid(n))[0].id for n in range(count)]


def found(index: MediaIndex, q: str) -> list[str]:
    return [m.sid for m in list_messages(index, MessageFilter(q=q), limit=50).rows]


def test_text_is_in_the_media_json_only_once_read(index: MediaIndex) -> None:
    first, second, third = seed(index, 3)
    assert media_json(index.get_media(first))["text"] is None  # type: ignore[arg-type]
    index.set_texts(
        [
            ReadText(first, sid(0), "done", "TOTAL 42,00 EUR\nDanke", "eng+deu", None, 1.5),
            ReadText(second, sid(1), "done", "", "eng", None, 0.4),
            ReadText(third, sid(2), "timeout", "", "eng", "tesseract ran over 30 s", 30.0),
        ]
    )
    assert index.get_media(first).text == "TOTAL 42,00 EUR\nDanke"  # type: ignore[union-attr]
    assert index.get_message(sid(1)).media[0].text == ""  # type: ignore[union-attr]
    # Over time or failed: no text (null), and the reason is kept in the index.
    assert index.get_media(third).text is None  # type: ignore[union-attr]
    kept = index.text_of(third)
    assert kept is not None and kept.outcome == "timeout" and kept.detail
    listed = list_messages(index, MessageFilter(), limit=10).rows
    assert {m.sid: m.media[0].text for m in listed} == {
        sid(0): "TOTAL 42,00 EUR\nDanke",
        sid(1): "",
        sid(2): None,
    }


def test_q_finds_messages_by_the_text_in_their_images(index: MediaIndex) -> None:
    ids = seed(index, 4)
    index.set_texts(
        [
            ReadText(ids[0], sid(0), "done", "Rechnung Größe XL Straße", "deu", None, 1.0),
            ReadText(ids[1], sid(1), "done", "請求書の合計金額", "jpn", None, 1.0),
            ReadText(ids[2], sid(2), "done", "Invoice 4711", "eng", None, 1.0),
        ]
    )
    assert ensure_search_index(index.engine)
    with index.engine.connect() as conn:
        assert has_search_index(conn)
    assert found(index, "größe") == [sid(0)]
    assert found(index, "合計金額") == [sid(1)]
    assert found(index, "INVOICE 47") == [sid(2)]
    assert found(index, "photo 3") == [sid(3)]  # bodies are still searched
    # A message matched by both its body and its image's text is listed once.
    with index.engine.begin() as conn:
        conn.execute(update(messages).where(messages.c.sid == sid(2)).values(body="Invoice"))
    assert found(index, "invoice") == [sid(2)]
    # Short queries (under a trigram) scan, and still find image text.
    assert found(index, "XL") == [sid(0)]
    # Deleting a message deletes its text from the search.
    index.delete_message(sid(1))
    assert found(index, "合計") == []


def test_q_past_the_newest_window_uses_the_trigram_indexes(index: MediaIndex) -> None:
    from receiver.index import queries

    ids = seed(index, 6)
    index.set_texts([ReadText(ids[0], sid(0), "done", "needle in the oldest", "eng", None, 1.0)])
    original = queries.SEARCH_WINDOW
    queries.SEARCH_WINDOW = 2  # the oldest message is outside the first step's window
    try:
        assert found(index, "needle") == [sid(0)]
    finally:
        queries.SEARCH_WINDOW = original


def test_an_image_is_claimed_by_one_reader_until_its_claim_goes_stale(index: MediaIndex) -> None:
    (media_id,) = seed(index, 1)
    assert index.claim_text(media_id, sid(0), "eng", stale_after=60)
    assert not index.claim_text(media_id, sid(0), "eng", stale_after=60)
    assert index.images_missing(texts=True, hashes=False, stale_after=60) == []
    assert index.get_media(media_id).text is None  # type: ignore[union-attr]
    # The reader died: an hour later the claim is stale and is taken over.
    with index.engine.begin() as conn:
        conn.execute(update(media_text).values(created_at=datetime.now(UTC) - timedelta(hours=1)))
    assert [m.id for m in index.images_missing(texts=True, hashes=False, stale_after=60)] == [
        media_id
    ]
    assert index.claim_text(media_id, sid(0), "eng", stale_after=60)
    index.set_texts([ReadText(media_id, sid(0), "done", "read", "eng", None, 1.0)])
    # Read: never claimed again.
    assert not index.claim_text(media_id, sid(0), "eng", stale_after=0)
    assert index.text_of(media_id).outcome == "done"  # type: ignore[union-attr]
    assert index.text_of(media_id).outcome != READING  # type: ignore[union-attr]


def test_images_missing_walks_stored_images_by_id(index: MediaIndex) -> None:
    ids = seed(index, 5)
    index.set_hashes([(ids[1], 7)])
    index.set_texts([ReadText(ids[2], sid(2), "failed", "", "eng", "image: corrupt", 0.1)])
    with index.engine.begin() as conn:
        conn.execute(update(media).where(media.c.id == ids[4]).values(kind="video"))
    missing_hash = index.images_missing(hashes=True, limit=2)
    assert [m.id for m in missing_hash] == [ids[0], ids[2]]
    after = index.images_missing(hashes=True, after_id=ids[2], limit=2)
    assert [m.id for m in after] == [ids[3]]
    assert [m.id for m in index.images_missing(hashes=False, texts=True)] == [
        ids[0],
        ids[1],
        ids[3],
    ]
    recent = index.images_missing(since=datetime.now(UTC) - timedelta(minutes=5))
    assert [m.id for m in recent] == [ids[0], ids[2], ids[3]]
    assert index.images_missing(before=START) == []
    # A text for an item erased meanwhile is dropped, not an error.
    with index.engine.begin() as conn:
        conn.execute(delete(media).where(media.c.id == ids[3]))
    index.set_texts([ReadText(ids[3], sid(3), "done", "gone", "eng", None, 0.1)])
    assert index.text_of(ids[3]) is None
