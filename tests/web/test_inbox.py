"""/inbox and /inbox/<thread>: server-rendered threads from webhooks and outbound rows."""

from __future__ import annotations

import re
from typing import Any

from tests.support.webhooks import WebhookPoster, inbound_params
from tests.web.conftest import login
from tests.web.seed import Item, Seeder

OURS = "+15017122661"  # the To of tests.web.seed's messages


def test_inbox_lists_threads_and_a_thread_shows_both_directions(
    app: Any, client: Any, seed: Seeder
) -> None:
    seed.message(body="Older question", from_addr="+15550002222")
    photo = seed.message(
        body="Photos of the parcel",
        from_addr="+15550001111",
        items=[Item(kind="image", detected_type="image/jpeg", width=640, height=480)],
    )
    seed.outbound(status="undelivered", error_code=30003, body="Sorry to hear that")
    login(client, next_path="/inbox")
    html = client.get("/inbox").get_data(as_text=True)
    customers = re.findall(r'<h2 id="t-\d+"><a href="/inbox/([^"]+)">', html)
    # The outbound row (to +15558675310) is the newest activity, then the photos.
    assert customers == [
        f"{OURS}~+15558675310",
        f"{OURS}~+15550001111",
        f"{OURS}~+15550002222",
    ]
    assert "/api/media/" in html and "/thumbnail" in html  # the last message's thumbnail
    assert 'alt="Image 1 from +15550001111"' in html

    page = client.get(f"/inbox/{OURS}~+15550001111").get_data(as_text=True)
    assert "Photos of the parcel" in page and f"/messages/{photo}" in page
    reply = client.get(f"/inbox/{OURS}~+15558675310").get_data(as_text=True)
    assert "Status: <span" in reply and "undelivered" in reply
    assert "30003" in reply and "Unreachable destination handset" in reply


def test_an_opted_out_customer_is_marked(app: Any, client: Any) -> None:
    poster = WebhookPoster(client)
    customer = "+15550003333"
    assert poster.post(inbound_params(body="hello", from_=customer, to=OURS)).status_code == 200
    assert poster.post(inbound_params(body="STOP", from_=customer, to=OURS)).status_code == 200
    login(client, next_path="/inbox")
    html = client.get("/inbox").get_data(as_text=True)
    assert "opted out (replied STOP)" in html
    thread = client.get(f"/inbox/{OURS}~{customer}").get_data(as_text=True)
    assert "opted out (replied STOP)" in thread
    assert thread.index(">hello<") < thread.index(">STOP<")  # oldest first


def test_bad_thread_keys_and_cursors(client: Any, seed: Seeder) -> None:
    seed.message()
    assert client.get("/inbox").status_code == 302  # login first
    login(client, next_path="/inbox")
    for path in (f"/inbox/{OURS}~+19999999999", "/inbox/not-a-thread", "/inbox/a~b~c"):
        assert client.get(path).status_code == 404, path
    resp = client.get("/inbox", query_string={"cursor": "garbage!"})
    assert resp.status_code == 400 and "cursor is malformed" in resp.get_data(as_text=True)
