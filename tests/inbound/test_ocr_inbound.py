"""Text in images through the real pipeline and tesseract: the media JSON, `q`, the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from receiver.index.schema import media_text
from tests.conftest import AUTH
from tests.support import textimages
from tests.support.mediaserver import MediaServer
from tests.support.textimages import require_tesseract
from tests.support.webhooks import WebhookPoster, inbound_params, new_sid
from tests.web.conftest import login
from tests.web.seed import Item, Seeder


def deliver(app: Any, server: MediaServer, files: dict[str, bytes]) -> dict[str, str]:
    """One message per file; {name: MessageSid}. Waits for the background threads."""
    client = app.test_client()
    sids = {}
    for name, data in files.items():
        url = server.add(f"/{name}", data, content_type="image/jpeg")
        sid = new_sid()
        resp = WebhookPoster(client).post(
            inbound_params(sid, media=[(url, "image/jpeg")], body="see attached")
        )
        assert resp.status_code == 200, resp.get_data(as_text=True)
        sids[name] = sid
    # Thumbnails, then text: shutdown waits for both threads to finish their queues.
    app.extensions["receiver"].pipeline.shutdown(wait=True)
    return sids


def test_text_in_images_is_in_the_json_the_search_and_the_page(make_app: Any, db_url: str) -> None:
    require_tesseract("eng", "deu", "jpn")
    files = {
        "en.jpg": textimages.english(),
        "de.jpg": textimages.german(),
        "ja.jpg": textimages.japanese(),
    }
    with MediaServer() as server:
        app = make_app(
            RECEIVER_MEDIA_HOSTS=server.host_port,
            RECEIVER_DATABASE_URL=db_url,
            RECEIVER_OCR="eng+deu+jpn",
        )
        sids = deliver(app, server, files)
    client = app.test_client()
    expected = {
        "en.jpg": textimages.ENGLISH,
        "de.jpg": textimages.GERMAN,
        "ja.jpg": textimages.JAPANESE,
    }
    for name, sid in sids.items():
        body = client.get(f"/api/messages/{sid}", headers=AUTH).get_json()
        (item,) = body["media"]
        assert item["state"] == "stored"
        assert item["text"] == expected[name], name

    def search(q: str) -> list[str]:
        resp = client.get("/api/messages", query_string={"q": q}, headers=AUTH)
        assert resp.status_code == 200
        return [m["sid"] for m in resp.get_json()["messages"]]

    assert search("invoice 4711") == [sids["en.jpg"]]
    assert search("Übermäßig") == [sids["de.jpg"]]
    assert search("合計金額") == [sids["ja.jpg"]]
    assert search("nothing like this") == []
    assert sorted(search("see attached")) == sorted(sids.values())  # bodies as before

    login(client)
    page = client.get(f"/messages/{sids['de.jpg']}").get_data(as_text=True)
    assert "Text in image" in page
    assert textimages.GERMAN in page
    listing = client.get("/messages", query_string={"q": "請求書"}).get_data(as_text=True)
    assert sids["ja.jpg"] in listing and sids["en.jpg"] not in listing


def test_without_receiver_ocr_no_text_is_read(make_app: Any) -> None:
    with MediaServer() as server:
        app = make_app(RECEIVER_MEDIA_HOSTS=server.host_port)
        sids = deliver(app, server, {"en.jpg": textimages.english()})
    assert app.extensions["receiver"].pipeline.texts is None
    body = app.test_client().get(f"/api/messages/{sids['en.jpg']}", headers=AUTH).get_json()
    assert body["media"][0]["text"] is None
    assert body["media"][0]["state"] == "stored"


def test_the_sweep_reads_recent_images_left_unread_and_takes_over_dead_claims(
    make_app: Any,
) -> None:
    require_tesseract("eng")
    app = make_app(RECEIVER_OCR="eng")
    svc = app.extensions["receiver"]
    seed = Seeder(app)
    now = datetime.now(UTC)
    english = textimages.english()
    # Stored before a restart lost the OCR queue; and one from last week (backfill's).
    lost = seed.message(items=[Item(data=english)], received_at=now - timedelta(minutes=10))
    claimed = seed.message(items=[Item(data=english)], received_at=now - timedelta(minutes=9))
    old = seed.message(items=[Item(data=english)], received_at=now - timedelta(days=7))
    (claimed_id,) = (m.id for m in svc.index.media_of(claimed))
    # Another process is reading this one right now.
    assert svc.index.claim_text(claimed_id, claimed, "eng", stale_after=60)

    def text_of(sid: str) -> str | None:
        message = svc.index.get_message(sid)
        assert message is not None
        return message.media[0].text

    svc.pipeline.sweep()
    svc.pipeline.texts.shutdown(wait=True)
    assert text_of(lost) == textimages.ENGLISH
    assert text_of(claimed) is None
    assert text_of(old) is None
    # That process died: once its claim is stale, the next sweep reads the image.
    with svc.index.engine.begin() as conn:
        conn.execute(update(media_text).values(created_at=now - timedelta(hours=1)))
    svc.pipeline.sweep()  # caught up a moment ago: it waits a minute before looking again
    svc.pipeline.texts.shutdown(wait=True)
    assert text_of(claimed) is None
    svc.pipeline.texts.fill_every = 0
    svc.pipeline.texts._next_fill = 0.0
    svc.pipeline.sweep()
    svc.pipeline.texts.shutdown(wait=True)
    assert text_of(claimed) == textimages.ENGLISH
    assert text_of(old) is None
