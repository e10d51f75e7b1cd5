"""receiver.index.replies on SQLite and PostgreSQL: reply authors, a thread's stored files."""

from __future__ import annotations

from sqlalchemy import select, update

from receiver.index import MediaIndex
from receiver.index.inbox import ThreadKey
from receiver.index.replies import Operator, ReplyIndex
from receiver.index.schema import media
from tests.index.rows import media_rows, message, sid

OURS = "+15017122661"
CUSTOMER = "+15550001111"


def test_the_first_author_of_a_key_stays(index: MediaIndex) -> None:
    replies = ReplyIndex(index.engine, begin=index.begin)
    thread = ThreadKey(OURS, CUSTOMER)
    replies.record_author("reply:a" * 2, Operator("admin", "admin"), thread)
    replies.record_author("reply:a" * 2, Operator("api", "API token"), thread)  # a resubmission
    replies.record_author("reply:b", Operator("api", "API token"), thread)
    found = replies.authors(["reply:a" * 2, "reply:b", "reply:unknown", None])
    assert found == {
        "reply:a" * 2: Operator("admin", "admin"),
        "reply:b": Operator("api", "API token"),
    }
    assert replies.authors([]) == {} and replies.authors([None]) == {}


def test_stored_files_are_the_threads_stored_originals_only(index: MediaIndex) -> None:
    replies = ReplyIndex(index.engine, begin=index.begin)
    index.record_message(message(1, from_addr=CUSTOMER, to_addr=OURS), media_rows(2))
    index.record_message(message(2, from_addr="+15550002222", to_addr=OURS), media_rows(1))
    with index.begin() as conn:
        ids = {
            (r.message_sid, r.idx): r.id
            for r in conn.execute(select(media.c.id, media.c.message_sid, media.c.idx))
        }
        # Item 0 of each message is stored; item 1 of message 1 was rejected.
        for msg in (1, 2):
            conn.execute(
                update(media)
                .where(media.c.id == ids[(sid(msg), 0)])
                .values(
                    state="stored",
                    kind="image",
                    detected_type="image/png",
                    size_bytes=1234,
                    storage_key=f"media/AC/{sid(msg)}/0-ME.png",
                )
            )
        conn.execute(update(media).where(media.c.id == ids[(sid(1), 1)]).values(state="rejected"))
    thread = ThreadKey(OURS, CUSTOMER)
    (item,) = replies.stored_files(thread)
    assert item.media_id == ids[(sid(1), 0)] and item.message_sid == sid(1)
    assert item.filename == f"media{item.media_id}.png" and item.size_bytes == 1234
    # Another thread's stored file is not offered, even when asked for by id.
    assert replies.stored_files(thread, ids=[ids[(sid(2), 0)]]) == []
    assert replies.stored_files(thread, ids=[item.media_id]) == [item]
