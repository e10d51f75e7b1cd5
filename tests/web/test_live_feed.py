"""What the live feed says about real webhooks, thumbnails and status callbacks, and
the inbox's unread counts, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert

from receiver.index.inbox import ThreadKey
from receiver.index.live import LiveCursor, LiveEvent
from receiver.index.livefeed import LiveFeed, mark_seen, unread_counts
from receiver.index.schema import outbound_messages
from tests.conftest import AUTH
from tests.support import samples
from tests.support.mediaserver import MediaServer
from tests.support.webhooks import WebhookPoster, inbound_params, new_sid
from tests.web.conftest import login

OURS = "+15557654321"


def _feed(app: Any) -> LiveFeed:
    return app.extensions["receiver"].live.feed


def _wait_for(feed: LiveFeed, want: str, sid: str, timeout: float = 15.0) -> list[LiveEvent]:
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in feed.after(LiveCursor()) if e.message_sid == sid]
        if any(e.type == want for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_a_message_its_media_and_its_thumbnail_each_make_a_live_event(
    make_app: Any, db_url: str, media_server: MediaServer
) -> None:
    app = make_app(RECEIVER_DATABASE_URL=db_url, RECEIVER_MEDIA_HOSTS=media_server.host_port)
    feed = _feed(app)
    start = feed.head()
    sid = new_sid("MM")
    url = media_server.add(f"/{sid}/photo.jpg", samples.jpeg(640, 480), content_type="image/jpeg")
    params = inbound_params(sid, body="photo", media=[(url, "image/jpeg")], to=OURS)
    assert WebhookPoster(app.test_client()).post(params).status_code == 200

    events = _wait_for(feed, "media.thumbnail", sid)
    types = [e.type for e in events]
    assert types[:2] == ["message.received", "media.stored"]
    assert "media.thumbnail" in types
    thread = f"{OURS}~+15551230001"
    assert {e.thread for e in events} == {thread}
    assert {e.direction for e in events} == {"inbound"}
    thumb = next(e for e in events if e.type == "media.thumbnail")
    assert thumb.thumbnail is True and thumb.media_id is not None
    assert thumb.as_dict()["thumbnail"] is True
    # Cursors grow in the order the changes committed, after where the page started.
    cursors = [e.cursor for e in events]
    assert cursors == sorted(cursors) and cursors[0] > start
    assert feed.head() >= cursors[-1]
    frame = events[0].frame().decode()
    assert frame.startswith(f"id: {events[0].cursor.encode()}\ndata: {{")
    assert frame.endswith("\n\n")

    # Erasing the message erases what the live feed kept of it.
    left = {e.cursor for e in feed.after(LiveCursor())}
    assert app.test_client().delete(f"/api/messages/{sid}", headers=AUTH).status_code == 200
    assert left & {e.cursor for e in events}
    assert not {e.cursor for e in feed.after(LiveCursor())} & {e.cursor for e in events}


def test_a_status_callback_makes_a_live_event_with_the_status_text(
    make_app: Any, db_url: str
) -> None:
    app = make_app(RECEIVER_DATABASE_URL=db_url)
    svc = app.extensions["receiver"]
    sid = new_sid("SM")
    now = datetime.now(UTC)
    with svc.index.engine.begin() as conn:
        conn.execute(
            insert(outbound_messages).values(
                sid=sid,
                to_addr="+15558675310",
                from_addr=OURS,
                body="hello",
                media="[]",
                status="sent",
                created_at=now,
                updated_at=now,
            )
        )
    poster = WebhookPoster(app.test_client())
    params = [("MessageSid", sid), ("MessageStatus", "undelivered"), ("ErrorCode", "30003")]
    params.append(("AccountSid", svc.settings.account_sid))
    assert poster.post(params, path="/twilio/status").status_code in (200, 204)

    (event,) = [e for e in _feed(app).after(LiveCursor()) if e.message_sid == sid]
    assert event.type == "message.status"
    assert event.status == "undelivered"
    assert event.error_code == 30003
    assert event.thread == f"{OURS}~+15558675310"
    assert event.direction == "outbound"


def test_unread_counts_follow_what_the_operator_opened(make_app: Any, db_url: str) -> None:
    app = make_app(RECEIVER_DATABASE_URL=db_url)
    client = app.test_client()
    login(client)
    poster = WebhookPoster(client)
    customer = "+15550003001"
    for body in ("one", "two"):
        assert poster.post(inbound_params(body=body, from_=customer, to=OURS)).status_code == 200
    key = f"{OURS}~{customer}"

    def badge() -> str | None:
        page = client.get("/inbox").get_data(as_text=True)
        match = re.search(r'class="badge unread">([^<]*)<span class="sr"> unread', page)
        return match[1] if match else None

    assert badge() == "2"
    assert client.get(f"/inbox/{key}").status_code == 200
    assert badge() is None
    assert poster.post(inbound_params(body="three", from_=customer, to=OURS)).status_code == 200
    assert badge() == "1"

    # Per operator: another account has seen nothing yet; seen never moves backwards.
    index = app.extensions["receiver"].index
    thread = ThreadKey.decode(key)
    assert thread is not None
    assert unread_counts(index, "admin", [thread]) == {key: 1}
    assert unread_counts(index, "someone-else", [thread]) == {key: 3}
    mark_seen(index, "someone-else", thread, datetime(2000, 1, 1, tzinfo=UTC))
    assert unread_counts(index, "someone-else", [thread]) == {key: 3}
