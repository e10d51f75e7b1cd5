"""The browser's pages: list, filters, pages, detail, sender, deliveries, deletion, escaping."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest

from tests.web.conftest import csrf_of, login
from tests.web.seed import BASE_TIME, Item, Seeder

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
CONTACT = {
    "name": "Pat <b>Example</b>",
    "phones": ["+15550100123"],
    "emails": ["pat@example.com"],
    "org": "ACME",
}


@pytest.fixture
def browser(client: Any) -> Any:
    login(client)
    return client


def text(resp: Any) -> str:
    return resp.get_data(as_text=True)


def test_empty_list(browser: Any) -> None:
    page = text(browser.get("/messages"))
    assert "No messages yet" in page


def test_home_goes_to_messages(browser: Any) -> None:
    assert browser.get("/").headers["Location"] == "/messages"


def test_list_newest_first_with_thumbnails(browser: Any, seed: Seeder) -> None:
    old = seed.message(body="older one", received_at=BASE_TIME)
    new = seed.message(
        body="newer one",
        from_addr="+15550002222",
        received_at=BASE_TIME + timedelta(hours=2),
        items=[Item(), Item(kind="video", detected_type="video/mp4", ext="mp4")],
    )
    page = text(browser.get("/messages"))
    assert page.index(new) < page.index(old)
    image_id = seed.media_rows(new)[0]["id"]
    assert f'src="/api/media/{image_id}/thumbnail"' in page
    assert 'alt="Image 1 from +15550002222"' in page
    assert ">video<" in page
    assert "2024-05-01 14:00:00 UTC" in page


def test_every_img_has_alt_text(browser: Any, seed: Seeder) -> None:
    made = seed.message(
        items=[
            Item(),
            Item(),
            Item(kind="contact", detected_type="text/vcard", ext="vcf", contact=CONTACT),
        ]
    )
    for path in ("/messages", f"/messages/{made}", "/senders/+15550001111"):
        page = text(browser.get(path))
        imgs = re.findall(r"<img\b[^>]*>", page)
        assert imgs, path
        assert all(re.search(r'\balt="[^"]+"', tag) for tag in imgs), path


def test_filters_on_the_page(browser: Any, seed: Seeder) -> None:
    a = seed.message(
        from_addr="+15550000001",
        body="alpha",
        items=[Item(kind="audio", detected_type="audio/mpeg", ext="mp3")],
    )
    b = seed.message(from_addr="+15550000002", body="beta", items=[Item()])
    page = text(browser.get("/messages", query_string={"kind": "audio"}))
    assert a in page and b not in page
    assert '<option value="audio" selected>' in page
    page = text(browser.get("/messages", query_string={"q": "BETA"}))
    assert b in page and a not in page
    assert 'value="BETA"' in page
    page = text(browser.get("/messages", query_string={"from": "+15550000001"}))
    assert a in page and b not in page
    page = text(browser.get("/messages", query_string={"since": "2024-05-02"}))
    assert "No messages match these filters" in page


def test_bad_filter_is_explained(browser: Any) -> None:
    resp = browser.get("/messages", query_string={"since": "tomorrow"})
    assert resp.status_code == 400
    assert "since must be an ISO 8601 date" in text(resp)
    resp = browser.get("/messages", query_string={"cursor": "nope"})
    assert resp.status_code == 400 and "cursor is malformed" in text(resp)


def test_cursor_pages(browser: Any, seed: Seeder) -> None:
    made = [
        seed.message(
            body=f"number {i}", items=[Item(kind="audio", detected_type="audio/mpeg", ext="mp3")]
        )
        for i in range(60)
    ]
    first = text(browser.get("/messages", query_string={"kind": "audio"}))
    assert made[-1] in first and made[9] not in first
    link = html.unescape(re.search(r'<a rel="next" href="([^"]+)"', first).group(1))
    assert "kind=audio" in link
    second = text(browser.get(link))
    assert made[9] in second and made[-1] not in second
    assert 'rel="next"' not in second
    assert ">Newest<" in second


def test_detail_page_shows_every_attachment(app: Any, browser: Any, seed: Seeder) -> None:
    made = seed.message(
        body="see attached",
        items=[
            Item(width=64, height=48, declared_type="image/png"),
            Item(kind="video", detected_type="video/mp4", ext="mp4"),
            Item(kind="audio", detected_type="audio/mpeg", ext="mp3"),
            Item(kind="contact", detected_type="text/vcard", ext="vcf", contact=CONTACT),
            Item(
                kind="document", detected_type="application/pdf", ext="pdf", data=b"%PDF-1.4 " * 200
            ),
            Item(state="rejected", reason="decompression_bomb"),
        ],
    )
    rows = seed.media_rows(made)
    page = text(browser.get(f"/messages/{made}"))
    assert f'src="/api/media/{rows[0]["id"]}/thumbnail"' in page
    assert f'<video controls preload="metadata" src="/api/media/{rows[1]["id"]}/content"' in page
    assert f'<audio controls preload="metadata" src="/api/media/{rows[2]["id"]}/content"' in page
    assert 'class="card contact-card"' in page
    assert "Pat &lt;b&gt;Example&lt;/b&gt;" in page
    assert 'href="tel:+15550100123"' in page and 'href="mailto:pat@example.com"' in page
    assert f'href="/api/media/{rows[4]["id"]}/content">Download</a> (1 KB)' in page
    assert "Not stored: rejected (decompression_bomb)" in page
    # Facts: declared and detected type, size, dimensions, SHA-256, state.
    assert "image/png" in page and "does not match the declared type" in page
    assert "64 × 48" in page
    assert rows[0]["sha256"] in page
    assert f"{rows[4]['size_bytes']} bytes" in page
    # Raw webhook parameters.
    assert '<th scope="row">MessageSid</th><td>' + made in page
    assert 'name="csrf_token"' in page and f'action="/messages/{made}/delete"' in page


def test_detail_page_escapes_sender_text(browser: Any, seed: Seeder) -> None:
    made = seed.message(
        body=XSS,
        from_addr=XSS,
        params=[["Body", XSS], ["From", XSS], [XSS, "value"]],
        items=[
            Item(
                kind="contact",
                detected_type="text/vcard",
                ext="vcf",
                contact={**CONTACT, "name": XSS},
            )
        ],
    )
    for path in (f"/messages/{made}", "/messages"):
        page = text(browser.get(path))
        assert "<script" not in page
        assert "<img src=x" not in page
        assert (
            "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
            in page
        )


def test_missing_file_placeholder(app: Any, browser: Any, seed: Seeder) -> None:
    made = seed.message(items=[Item(), Item(kind="video", detected_type="video/mp4", ext="mp4")])
    rows = seed.media_rows(made)
    store = app.extensions["receiver"].store
    store.delete(rows[0]["storage_key"])
    store.delete(rows[1]["storage_key"])
    resp = browser.get(f"/messages/{made}")
    assert resp.status_code == 200
    assert text(resp).count("File missing") == 2


def test_unknown_message_page(browser: Any) -> None:
    for sid in ("MM" + "0" * 32, "..", "<script>"):
        resp = browser.get(f"/messages/{sid}")
        assert resp.status_code == 404
        assert "There is no message" in text(resp)
        assert "<script>" not in text(resp)


def test_sender_page_shows_only_that_sender(browser: Any, seed: Seeder) -> None:
    mine = seed.message(
        from_addr="+15550000001",
        items=[Item(), Item(kind="audio", detected_type="audio/mpeg", ext="mp3")],
    )
    theirs = seed.message(from_addr="+15550000002", items=[Item()])
    page = text(browser.get("/senders/+15550000001"))
    for row in seed.media_rows(mine):
        assert f"/messages/{mine}#media-{row['idx'] + 1}" in page
    assert theirs not in page
    assert "Media from" in page
    empty = text(browser.get("/senders/+15559999999"))
    assert "No attachments from this sender" in empty


def test_whatsapp_sender_link(browser: Any, seed: Seeder) -> None:
    made = seed.message(from_addr="+15550000001", channel="whatsapp", items=[Item()])
    page = text(browser.get(f"/messages/{made}"))
    assert 'href="/senders/whatsapp:+15550000001"' in page
    assert made in text(browser.get("/senders/whatsapp:+15550000001"))


def test_deliveries(browser: Any, seed: Seeder) -> None:
    assert "Nothing sent yet" in text(browser.get("/deliveries"))
    seed.outbound(status="delivered")
    seed.outbound(status="undelivered", error_code=30003, body=XSS)
    page = text(browser.get("/deliveries"))
    assert "delivered" in page and "30003" in page and "Unreachable destination handset" in page
    assert "<script>" not in page


def test_delete_from_the_page(app: Any, browser: Any, seed: Seeder) -> None:
    made = seed.message(items=[Item()])
    keys = [seed.media_rows(made)[0]["storage_key"], seed.media_rows(made)[0]["thumbnail_key"]]
    token = csrf_of(browser, f"/messages/{made}")
    unconfirmed = browser.post(f"/messages/{made}/delete", data={"csrf_token": token})
    assert unconfirmed.status_code == 303 and app.extensions["receiver"].index.get_message(made)
    resp = browser.post(f"/messages/{made}/delete", data={"csrf_token": token, "confirm": "yes"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/messages"
    page = text(browser.get("/messages"))
    assert f"Deleted message {made} and 2 stored files." in page
    store = app.extensions["receiver"].store
    assert not any(store.exists(k) for k in keys)
    assert browser.get(f"/messages/{made}").status_code == 404


def test_pages_work_without_scripts(app: Any, browser: Any, seed: Seeder) -> None:
    made = seed.message(items=[Item()])
    pages = [
        text(browser.get(p))
        for p in ("/messages", f"/messages/{made}", "/deliveries", "/senders/+15550001111")
    ]
    pages.append(text(app.test_client().get("/login")))
    for page in pages:
        assert "<script" not in page
        assert " style=" not in page  # the policy allows only the stylesheet
        assert '<meta name="viewport"' in page


def test_message_page_shows_whatsapp_fields(browser: Any, seed: Seeder) -> None:
    made = seed.message(
        from_addr="whatsapp:+15551230001",
        channel="whatsapp",
        params=[
            ["From", "whatsapp:+15551230001"],
            ["ProfileName", "Ada <b>L</b>"],
            ["WaId", "15551230001"],
            ["ButtonText", "Track order"],
            ["ButtonPayload", "track-42"],
            ["OriginalRepliedMessageSid", "SM" + "1" * 32],
        ],
    )
    page = text(browser.get(f"/messages/{made}"))
    summary = page.split('<dl class="facts summary">', 1)[1].split("</dl>", 1)[0]
    for label, value in (
        ("Profile name", "Ada &lt;b&gt;L&lt;/b&gt;"),
        ("WhatsApp ID", "15551230001"),
        ("Button text", "Track order"),
        ("Button payload", "track-42"),
        ("In reply to", "SM" + "1" * 32),
    ):
        assert f"<dt>{label}</dt><dd>{value}</dd>" in summary
    plain = text(browser.get(f"/messages/{seed.message()}"))
    assert "WhatsApp ID" not in plain
