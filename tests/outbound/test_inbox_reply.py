"""The inbox reply box and its API: through the send core to the fake Twilio API, once.

The service runs on a loopback HTTP server (the fake fetches the prepared
files from its /m/ links and posts signed status callbacks to it); the browser
side is the Flask test client with a real login session and CSRF token.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import requests

from tests.conftest import AUTH
from tests.outbound.conftest import RECIPIENT, SENDER, Running
from tests.support import samples
from tests.support.fake_twilio import FakeTwilio
from tests.support.mediaserver import MediaServer
from tests.support.waiting import wait_for
from tests.support.webhooks import WebhookPoster, inbound_params, new_sid
from tests.web.conftest import csrf_of, login

THREAD = f"{SENDER}~{RECIPIENT}"
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00\x01\x00\x00\x00" + b"\0" * 400
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<script>alert(1)</script><rect width="10" height="10"/></svg>'
)


@pytest.fixture
def browser(service: Running) -> Any:
    """A logged-in browser session (test client) on the running app, with a thread."""
    client = service.app.test_client()
    poster = WebhookPoster(client, base=service.url)
    params = inbound_params(body="Is my parcel coming?", from_=RECIPIENT, to=SENDER)
    assert poster.post(params).status_code == 200
    assert login(client, next_path="/inbox").status_code in (302, 303)
    return client


def _form(client: Any, thread: str = THREAD) -> dict[str, str]:
    """The hidden fields of the thread's reply form, as the page rendered them."""
    html = client.get(f"/inbox/{thread}").get_data(as_text=True)
    key = re.search(r'name="reply_key" value="([^"]+)"', html)
    assert key, "no reply form on the thread page"
    return {"csrf_token": csrf_of(client, f"/inbox/{thread}"), "reply_key": key.group(1)}


def _post(client: Any, fields: dict[str, Any], thread: str = THREAD) -> Any:
    return client.post(f"/inbox/{thread}/reply", data=fields, content_type="multipart/form-data")


def test_reply_with_text_and_heic_goes_out_as_jpeg_once_with_its_author(
    service: Running, browser: Any, fake: FakeTwilio
) -> None:
    fields = _form(browser)
    heic = samples.heic(640, 480)
    preview = browser.post(
        f"/api/threads/{THREAD}/replies/preview",
        data={"files": [(_io(heic), "photo.heic")]},
        headers={"X-CSRF-Token": fields["csrf_token"]},
        content_type="multipart/form-data",
    )
    assert preview.status_code == 200, preview.get_data(as_text=True)
    plan = preview.get_json()["files"]
    assert len(plan) == 1 and plan[0]["content_type"] == "image/jpeg"
    assert re.fullmatch(r"photo\.heic will be sent as JPEG, \d+ KB", plan[0]["summary"]), plan
    assert fake.outbound() == []  # a preview sends nothing

    resp = _post(browser, {**fields, "body": "Here it is", "files": [(_io(heic), "photo.heic")]})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    assert resp.headers["Location"].endswith(f"/inbox/{THREAD}#reply")
    sent = fake.outbound()
    assert len(sent) == 1 and sent[0]["body"] == "Here it is"
    assert sent[0]["from"] == SENDER and sent[0]["to"] == RECIPIENT
    media = fake.media[sent[0]["sid"]]
    assert [m["content_type"] for m in media.values()] == ["image/jpeg"]
    (item,) = service.outbound.message(sent[0]["sid"])["media"]
    assert item["source"] == "photo.heic" and item["filename"] == "photo.jpg"

    page = browser.get(f"/inbox/{THREAD}").get_data(as_text=True)
    assert "Reply sent" in page and "sent by admin" in page and "Here it is" in page
    assert wait_for(
        lambda: service.outbound.message(sent[0]["sid"])["status"] == "delivered", seconds=10
    )
    assert "status-delivered" in browser.get(f"/inbox/{THREAD}").get_data(as_text=True)

    # The same form again (a double click, or the browser resubmitting): sent once.
    again = _post(browser, {**fields, "body": "Here it is", "files": [(_io(heic), "photo.heic")]})
    assert again.status_code == 303
    assert len(fake.outbound()) == 1
    assert "already sent" in browser.get(f"/inbox/{THREAD}").get_data(as_text=True)


def test_api_reply_is_idempotent_and_names_the_operator(
    service: Running, browser: Any, fake: FakeTwilio
) -> None:
    headers = {**AUTH, "Idempotency-Key": "api-reply-0123456789"}
    url = f"{service.url}/api/threads/{THREAD}/replies"
    first = requests.post(url, json={"body": "Out for delivery"}, headers=headers, timeout=30)
    assert first.status_code == 201, first.text
    assert first.json()["operator"] == "API token" and first.json()["duplicate"] is False
    assert first.json()["media"] == []
    second = requests.post(url, json={"body": "Out for delivery"}, headers=headers, timeout=30)
    assert second.status_code == 200 and second.json()["duplicate"] is True
    assert second.json()["sid"] == first.json()["sid"]
    assert len(fake.outbound()) == 1
    assert "sent by API token" in browser.get(f"/inbox/{THREAD}").get_data(as_text=True)


def test_attach_a_stored_file_of_the_thread(
    service: Running, browser: Any, fake: FakeTwilio, media: MediaServer
) -> None:
    sid = new_sid("MM")
    url = media.add(f"/{sid}/door.png", samples.png(300, 200), content_type="image/png")
    poster = WebhookPoster(browser, base=service.url)
    params = inbound_params(
        sid, body="the door", media=[(url, "image/png")], from_=RECIPIENT, to=SENDER
    )
    assert poster.post(params).status_code == 200
    index = service.services.inbox_replies.replies
    from receiver.index.inbox import ThreadKey

    key = ThreadKey(SENDER, RECIPIENT)
    assert wait_for(lambda: index.stored_files(key), seconds=10)
    stored = index.stored_files(key)[0]
    fields = _form(browser)
    page = browser.get(f"/inbox/{THREAD}").get_data(as_text=True)
    assert f'name="stored" value="{stored.media_id}"' in page

    preview = browser.post(
        f"/api/threads/{THREAD}/replies/preview",
        data={"stored": str(stored.media_id)},
        headers={"X-CSRF-Token": fields["csrf_token"]},
    )
    assert preview.status_code == 200, preview.get_data(as_text=True)
    (plan,) = preview.get_json()["files"]
    assert plan["summary"].startswith(f"media{stored.media_id}.png will be sent as PNG, ")
    # A media id of another thread is refused: nothing is sent.
    resp = _post(browser, {**fields, "body": "x", "stored": "999999"})
    assert resp.status_code == 400 and "not stored files of this thread" in resp.get_data(True)
    resp = _post(browser, {**fields, "body": "Your photo", "stored": str(stored.media_id)})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    sent = fake.outbound()
    assert len(sent) == 1
    assert [m["content_type"] for m in fake.media[sent[0]["sid"]].values()] == ["image/png"]


def test_an_opted_out_customer_cannot_be_answered(
    service: Running, browser: Any, fake: FakeTwilio
) -> None:
    poster = WebhookPoster(browser, base=service.url)
    assert poster.post(inbound_params(body="STOP", from_=RECIPIENT, to=SENDER)).status_code == 200
    fields = _form(browser)
    page = browser.get(f"/inbox/{THREAD}").get_data(as_text=True)
    assert re.search(r"<fieldset disabled", page) and "opted out (replied STOP)" in page

    resp = _post(browser, {**fields, "body": "Please come back"})
    assert resp.status_code == 409
    assert "opted out (replied STOP)" in resp.get_data(as_text=True)
    api = requests.post(
        f"{service.url}/api/threads/{THREAD}/replies",
        json={"body": "Please come back"},
        headers=AUTH,
        timeout=30,
    )
    assert api.status_code == 409 and api.json()["error"] == "opted_out"
    assert fake.outbound() == [] and service.services.outbound_index.recent(10) == []


def test_a_thread_whose_number_is_no_longer_ours_is_refused(
    service: Running, browser: Any, fake: FakeTwilio
) -> None:
    released = "+15017129999"  # not a number of the fake's account
    poster = WebhookPoster(browser, base=service.url)
    assert poster.post(inbound_params(body="hi", from_=RECIPIENT, to=released)).status_code == 200
    thread = f"{released}~{RECIPIENT}"
    resp = _post(browser, {**_form(browser, thread), "body": "hello"}, thread)
    assert resp.status_code == 409
    assert "no longer a number or Messaging Service of this Twilio account" in resp.get_data(True)
    assert fake.outbound() == []


def _io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


BAD_INPUT: dict[str, tuple[dict[str, Any], int, str]] = {
    "body over 1600": ({"body": "x" * 1601}, 422, "body_too_long"),
    "eleven files": ({"files": [(None, f"p{i}.png") for i in range(11)]}, 422, "too_many_media"),
    "40 MB file": ({"files": [(b"\0" * 40_000_000, "big.jpg")]}, 413, "too_large"),
    "svg": ({"files": [(SVG, "logo.svg")]}, 422, "unsupported_type"),
    "executable": ({"files": [(ELF, "setup.exe")]}, 422, "unsupported_type"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_refused_with_a_reason_and_nothing_is_sent(
    case: str, service: Running, browser: Any, fake: FakeTwilio
) -> None:
    extra, status, reason = BAD_INPUT[case]
    body = extra.get("body", "see attached")
    png = samples.png(40, 30)
    files = [(png if data is None else data, name) for data, name in extra.get("files", [])]
    fields: dict[str, Any] = {**_form(browser), "body": body}
    fields["files"] = [(_io(data), name) for data, name in files]
    api = requests.post(
        f"{service.url}/api/threads/{THREAD}/replies",
        files=[("files", (name, data)) for data, name in files] or None,
        data={"body": body},
        headers=AUTH,
        timeout=60,
    )
    assert api.status_code == status, api.text[:500]
    assert api.json()["error"] == reason
    message = api.json()["message"]
    resp = _post(browser, fields)
    assert resp.status_code == status
    assert message in html.unescape(resp.get_data(as_text=True))  # the page says why
    assert fake.outbound() == []


def test_the_form_needs_its_csrf_token_and_a_login(service: Running, browser: Any) -> None:
    fields = _form(browser)
    resp = _post(browser, {"reply_key": fields["reply_key"], "body": "forged"})
    assert resp.status_code == 400 and "CSRF" in resp.get_data(as_text=True)
    anonymous = requests.post(
        f"{service.url}/api/threads/{THREAD}/replies", json={"body": "x"}, timeout=5
    )
    assert anonymous.status_code == 401


def test_uploads_are_scanned_when_clamd_is_configured(
    serve: Any, outbound_env: dict[str, str], fake: FakeTwilio, clamd: Any
) -> None:
    from tests.support.clamd import EICAR, SIG_EICAR_BODY

    running = serve({**outbound_env, "RECEIVER_CLAMD_URL": clamd.url})
    poster = WebhookPoster(running.app.test_client(), base=running.url)
    assert poster.post(inbound_params(body="hi", from_=RECIPIENT, to=SENDER)).status_code == 200
    url = f"{running.url}/api/threads/{THREAD}/replies"
    files = [("files", ("ok.jpg", samples.jpeg())), ("files", ("pic.jpg", EICAR))]
    for route in (url + "/preview", url):
        resp = requests.post(route, files=files, data={"body": "x"}, headers=AUTH, timeout=60)
        assert resp.status_code == 422 and resp.json()["error"] == "malware", resp.text
        assert f"media 2 (pic.jpg): malware: clamd found {SIG_EICAR_BODY}" in resp.json()["message"]
    assert fake.outbound() == []


def test_reply_routes_conform_to_the_document(service: Running, fake: FakeTwilio) -> None:
    from tests.support.conformance import conformance_failures, documented_operations

    operations = documented_operations(service.url, AUTH, r"^/api/threads/")
    assert sorted(op.label for op in operations) == [
        "POST /api/threads/{thread}/replies",
        "POST /api/threads/{thread}/replies/preview",
    ]
    failures = conformance_failures(operations, service.url, AUTH, max_examples=10)
    assert not failures, "\n\n".join(failures)
    assert fake.outbound() == []  # generated threads are not ours or not valid


def test_a_thread_without_messages_is_not_a_way_to_message_anyone(
    service: Running, browser: Any, fake: FakeTwilio
) -> None:
    stranger = f"{SENDER}~+15550009999"
    resp = _post(browser, {**_form(browser), "body": "hello"}, stranger)
    assert resp.status_code == 404
    api = requests.post(
        f"{service.url}/api/threads/{stranger}/replies", json={"body": "x"}, headers=AUTH, timeout=5
    )
    assert api.status_code == 404 and api.json()["error"] == "no_such_thread"
    url = f"{service.url}/api/threads/{THREAD}/replies"
    for bad in ({"json": [1]}, {"json": {"body": 5}}, {"data": {"stored": "²"}}):
        resp = requests.post(url, headers=AUTH, timeout=5, **bad)
        assert resp.status_code == 400 and resp.json()["message"], (bad, resp.text)
    assert fake.outbound() == []
