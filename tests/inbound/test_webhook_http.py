"""POST /twilio/messaging through the app: verify, record, fetch, answer TwiML; bad input."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from lxml import etree
from PIL import Image

from tests.conftest import AUTH
from tests.support.mediaserver import MediaServer
from tests.support.samples import jpeg
from tests.support.waiting import wait_for
from tests.support.webhooks import FORM, WebhookPoster, inbound_params, media_path, new_sid


@pytest.fixture
def media_app(make_app: Any, media_server: MediaServer) -> Any:
    return make_app(RECEIVER_MEDIA_HOSTS=media_server.host_port)


@pytest.fixture
def media_poster(media_app: Any) -> WebhookPoster:
    return WebhookPoster(media_app.test_client())


def recorded(client: Any, sid: str) -> dict[str, Any] | None:
    resp = client.get(f"/api/messages/{sid}", headers=AUTH)
    return resp.get_json() if resp.status_code == 200 else None


def reply_text(xml: bytes) -> str:
    root = etree.fromstring(xml)
    assert root.tag == "Response"
    return " ".join(root.itertext()).strip()


def test_signed_mms_is_recorded_stored_and_answered(
    media_poster: WebhookPoster, media_server: MediaServer, media_app: Any
) -> None:
    sid = new_sid()
    data = jpeg(320, 240)
    url = media_server.add(media_path(sid, 0), data, content_type="image/jpeg")
    vcard = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ada Lovelace\r\nTEL:+15550001111\r\nEND:VCARD\r\n"
    url2 = media_server.add(media_path(sid, 1), vcard, content_type="text/vcard")
    resp = media_poster.post(
        inbound_params(sid, body="hello", media=[(url, "image/jpeg"), (url2, "text/vcard")])
    )
    assert resp.status_code == 200
    assert resp.mimetype == "application/xml"
    text = reply_text(resp.data)
    assert text.startswith("Got a photo and a contact card")
    msg = recorded(media_poster.client, sid)
    assert msg is not None
    assert msg["state"] == "complete" and msg["body"] == "hello" and msg["num_media"] == 2
    photo, card = msg["media"]
    assert photo["state"] == "stored" and photo["kind"] == "image"
    assert photo["detected_type"] == "image/jpeg" and photo["declared_type"] == "image/jpeg"
    assert (photo["width"], photo["height"]) == (320, 240)
    assert photo["size_bytes"] == len(data)
    assert photo["storage_key"].startswith(f"media/{msg['account_sid']}/{sid}/0-ME")
    # The thumbnail follows the answer.
    deadline = time.monotonic() + 10
    while photo["thumbnail_key"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
        photo = recorded(media_poster.client, sid)["media"][0]
    assert photo["thumbnail_key"].startswith("derived/")
    with media_app.extensions["receiver"].store.open(photo["thumbnail_key"]) as fp:
        thumb = Image.open(fp)
        assert max(thumb.size) <= 320 and "exif" not in thumb.info
    store = media_app.extensions["receiver"].store
    with store.open(photo["storage_key"]) as fp:
        assert fp.read() == data  # byte-exact
    assert card["kind"] == "contact" and card["contact"]["name"] == "Ada Lovelace"


def test_duplicate_delivery_records_once_and_fetches_once(
    media_poster: WebhookPoster, media_server: MediaServer
) -> None:
    sid = new_sid()
    path = media_path(sid, 0)
    url = media_server.add(path, jpeg(), content_type="image/jpeg")
    params = inbound_params(sid, media=[(url, "image/jpeg")])
    first = media_poster.post(params)
    second = media_poster.post(params)
    assert first.status_code == second.status_code == 200
    assert media_server.count(path) == 1
    msg = recorded(media_poster.client, sid)
    assert msg is not None and len(msg["media"]) == 1


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda p, s: ({}, s[:-2] + "AA"), id="wrong-signature"),
        pytest.param(lambda p, s: ({}, ""), id="empty-signature"),
        pytest.param(lambda p, s: ({"Body": "changed"}, s), id="tampered-body"),
    ],
)
def test_forged_requests_change_nothing(poster: WebhookPoster, client: Any, mutate: Any) -> None:
    sid = new_sid("SM")
    params = inbound_params(sid, body="original")
    good = poster.sign("http://localhost/twilio/messaging", params)
    changes, signature = mutate(params, good)
    params = [(k, changes.get(k, v)) for k, v in params]
    resp = poster.post(params, signature=signature)
    assert resp.status_code == 403
    assert recorded(client, sid) is None


def test_missing_signature_header_is_403_and_logs_the_checked_url(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sid = new_sid("SM")
    with caplog.at_level(logging.WARNING):
        resp = client.post(
            "/twilio/messaging", data=urlencode(inbound_params(sid)), content_type=FORM
        )
    assert resp.status_code == 403
    assert recorded(client, sid) is None
    assert "checked URL http://localhost/twilio/messaging" in caplog.text
    assert "test-auth-token" not in caplog.text


def test_secondary_token_is_accepted_during_rotation(make_app: Any) -> None:
    app = make_app(TWILIO_AUTH_TOKEN_SECONDARY="rotated-token")
    poster = WebhookPoster(app.test_client(), token="rotated-token")
    sid = new_sid("SM")
    resp = poster.post(inbound_params(sid, body="hi"))
    assert resp.status_code == 200
    msg = recorded(poster.client, sid)
    assert msg is not None and msg["body"] == "hi"


def test_public_url_is_what_gets_verified(make_app: Any) -> None:
    app = make_app(RECEIVER_PUBLIC_URL="https://abc.ngrok-free.app")
    poster = WebhookPoster(app.test_client())
    sid = new_sid("SM")
    params = inbound_params(sid)
    # Twilio called the public https URL; the app sees http://localhost.
    ok = poster.post(params, signed_url="https://abc.ngrok-free.app/twilio/messaging")
    assert ok.status_code == 200
    bad = poster.post(inbound_params(new_sid("SM")))
    assert bad.status_code == 403


def test_fragment_connection_overrides_are_not_signed(make_app: Any) -> None:
    app = make_app(RECEIVER_PUBLIC_URL="https://hooks.example.com")
    poster = WebhookPoster(app.test_client())
    # The URL configured at Twilio carries connection overrides in its fragment. The
    # fragment never reaches us, so Twilio's signature cannot cover it: a signature over
    # the URL with its fragment is refused, one over the URL without it is accepted.
    configured = "https://hooks.example.com/twilio/messaging#rc=2&rp=all"
    with_fragment = new_sid("SM")
    resp = poster.post(inbound_params(with_fragment), signed_url=configured)
    assert resp.status_code == 403
    assert recorded(poster.client, with_fragment) is None
    without_fragment = new_sid("SM")
    resp = poster.post(inbound_params(without_fragment), signed_url=configured.split("#")[0])
    assert resp.status_code == 200
    assert recorded(poster.client, without_fragment) is not None


def test_trusted_proxy_headers_rebuild_the_url(make_app: Any) -> None:
    app = make_app(RECEIVER_PROXY_HOPS="1")
    poster = WebhookPoster(app.test_client())
    params = inbound_params()
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.example.com"}
    resp = poster.post(
        params, signed_url="https://sms.example.com/twilio/messaging", headers=headers
    )
    assert resp.status_code == 200
    # Without trusting proxies the same headers are ignored.
    untrusting = WebhookPoster(make_app().test_client())
    resp = untrusting.post(
        params, signed_url="https://sms.example.com/twilio/messaging", headers=headers
    )
    assert resp.status_code == 403


def test_get_webhooks_are_verified_over_the_query(client: Any, poster: WebhookPoster) -> None:
    sid = new_sid("SM")
    query = urlencode(inbound_params(sid, body="via get"))
    url = f"http://localhost/twilio/messaging?{query}"
    resp = client.get(
        f"/twilio/messaging?{query}", headers={"X-Twilio-Signature": poster.sign(url, [])}
    )
    assert resp.status_code == 200
    msg = recorded(client, sid)
    assert msg is not None and msg["body"] == "via get"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"MessageSid": None}, "MessageSid"),
        ({"From": None}, "From"),
        ({"NumMedia": "two"}, "NumMedia"),
        ({"NumMedia": "11"}, "NumMedia"),
        ({"NumMedia": "1"}, "MediaUrl0"),
        ({"NumMedia": "1", "MediaUrl0": "file:///etc/passwd"}, "MediaUrl0"),
        ({"MessageSid": "../../etc/passwd"}, "MessageSid"),
    ],
)
def test_malformed_requests_get_400_with_a_reason(
    poster: WebhookPoster, client: Any, changes: dict[str, str | None], reason: str
) -> None:
    params = [(k, v) for k, v in inbound_params("SM" + "5" * 32) if changes.get(k, "") is not None]
    params = [(k, changes.get(k, v) or v) for k, v in params]
    params += [(k, v) for k, v in changes.items() if v is not None and k not in dict(params)]
    resp = poster.post(params)
    assert resp.status_code == 400
    assert reason in resp.get_json()["message"]
    assert recorded(client, "SM" + "5" * 32) is None


def test_oversized_body_is_413(poster: WebhookPoster) -> None:
    resp = poster.post(inbound_params(body="x" * 70_000))
    assert resp.status_code == 413


def test_non_utf8_body_is_400(client: Any) -> None:
    resp = client.post(
        "/twilio/messaging",
        data=b"Body=%ff%fe&From=x",
        content_type=FORM,
        headers={"X-Twilio-Signature": "abc"},
    )
    assert resp.status_code == 400
    assert "UTF-8" in resp.get_json()["message"]


@pytest.mark.parametrize("word", ["STOP", "stop", " Unsubscribe ", "QUIT", "optout"])
def test_stop_keywords_opt_out_and_get_an_empty_answer(
    app: Any, poster: WebhookPoster, word: str
) -> None:
    resp = poster.post(inbound_params(body=word, from_="+15550009999"))
    assert resp.status_code == 200
    assert etree.fromstring(resp.data).tag == "Response" and len(etree.fromstring(resp.data)) == 0
    index = app.extensions["receiver"].index
    assert index.is_opted_out("+15550009999", ["+15557654321"]) is True
    poster.post(inbound_params(body="START", from_="+15550009999"))
    assert index.is_opted_out("+15550009999", ["+15557654321"]) is False


def test_opt_out_type_from_advanced_opt_out_wins(app: Any, poster: WebhookPoster) -> None:
    poster.post(
        inbound_params(
            body="arrêt",
            from_="+15550008888",
            OptOutType="STOP",
            MessagingServiceSid="MG" + "2" * 32,
        )
    )
    assert app.extensions["receiver"].index.is_opted_out("+15550008888", ["MG" + "2" * 32]) is True


def test_help_gets_the_help_template(poster: WebhookPoster) -> None:
    resp = poster.post(inbound_params(body="help"))
    assert "Reply STOP to opt out" in reply_text(resp.data)


def test_plain_sms_gets_an_empty_response(poster: WebhookPoster) -> None:
    resp = poster.post(inbound_params(body="just text"))
    assert resp.status_code == 200
    assert resp.data.strip().endswith(b"<Response/>")


def test_markup_in_body_cannot_break_the_twiml(make_app: Any, tmp_path: Any) -> None:
    app = make_app()
    override = app.extensions["receiver"].settings.data_dir / "templates"
    override.mkdir()
    (override / "message.txt").write_text("You said: {{ message.body }}")
    app = make_app()  # picks up the override on start
    poster = WebhookPoster(app.test_client())
    body = "</Body><Redirect>https://evil.example</Redirect>&amp;"
    resp = poster.post(inbound_params(body=body))
    root = etree.fromstring(resp.data)
    assert [el.tag for el in root.iter()] == ["Response", "Message", "Body"]
    assert root.findtext("Message/Body") == f"You said: {body}"


def test_database_down_answers_503_so_twilio_fails_over(
    make_app: Any, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    app = make_app(RECEIVER_DATABASE_URL=pg_url)
    poster = WebhookPoster(app.test_client())
    assert poster.post(inbound_params(body="before")).status_code == 200
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    with caplog.at_level(logging.ERROR):
        resp = poster.post(inbound_params(body="during outage"))
    assert resp.status_code == 503
    assert resp.headers["Retry-After"]
    assert "index unavailable" in caplog.text
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def test_readyz_and_healthz(client: Any) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.get_json()["status"] == "ready"


def test_api_needs_the_token(client: Any, poster: WebhookPoster) -> None:
    sid = new_sid("SM")
    poster.post(inbound_params(sid))
    assert client.get(f"/api/messages/{sid}").status_code == 401
    assert (
        client.get(f"/api/messages/{sid}", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    got = client.get(f"/api/messages/{sid}", headers=AUTH).get_json()
    assert got["sid"] == sid
    assert [name for name, _ in got["params"]].count("MessageSid") == 1


def test_whatsapp_referral_media_is_one_more_item(
    media_poster: WebhookPoster, media_server: MediaServer
) -> None:
    # Click-to-WhatsApp ads send the ad's image as ReferralMediaUrl, outside NumMedia
    # (https://www.twilio.com/docs/messaging/guides/webhook-request).
    sid = new_sid("SM")
    ad = media_server.add("/referral/ad.jpg", jpeg(64, 64), content_type="image/jpeg")
    params = inbound_params(
        sid,
        body="I saw your ad",
        from_="whatsapp:+15551230001",
        to="whatsapp:+15557654321",
        ProfileName="Ada",
        WaId="15551230001",
        ReferralMediaUrl=ad,
        ReferralMediaContentType="image/jpeg",
        ReferralSourceType="ad",
    )
    assert media_poster.post(params).status_code == 200
    msg = recorded(media_poster.client, sid)
    assert msg is not None and msg["channel"] == "whatsapp" and msg["num_media"] == 1
    (item,) = msg["media"]
    assert item["state"] == "stored" and item["kind"] == "image"
    assert ["ProfileName", "Ada"] in msg["params"] and ["WaId", "15551230001"] in msg["params"]
    bad = inbound_params(new_sid("SM"), ReferralMediaUrl="javascript:alert(1)")
    resp = media_poster.post(bad)
    assert resp.status_code == 400 and "ReferralMediaUrl" in resp.get_data(as_text=True)


def test_whatsapp_message_media_is_capped_at_16mb(
    media_poster: WebhookPoster, media_server: MediaServer
) -> None:
    # WhatsApp carries at most 16 MB per message (https://www.twilio.com/docs/api/errors/11751);
    # SMS/MMS messages keep RECEIVER_MAX_MESSAGE_BYTES (50 MB here).
    blob = b"\0" * 9_000_000

    def reasons(prefix: str) -> list[str | None]:
        sid = new_sid("MM")
        urls = [
            media_server.add(media_path(sid, i), blob, content_type="video/mp4") for i in range(2)
        ]
        params = inbound_params(
            sid,
            media=[(u, "video/mp4") for u in urls],
            from_=f"{prefix}+15551230001",
            to=f"{prefix}+15557654321",
        )
        assert media_poster.post(params).status_code == 200

        def settled() -> bool:
            msg = recorded(media_poster.client, sid)
            return msg is not None and all(m["state"] != "pending" for m in msg["media"])

        assert wait_for(settled, seconds=30)
        msg = recorded(media_poster.client, sid)
        assert msg is not None
        return [m["reason"] for m in msg["media"]]

    assert reasons("whatsapp:").count("message_too_large") == 1
    assert "message_too_large" not in reasons("")
