"""Sending end to end over real HTTP: the service, Twilio's fake, and the media it fetches.

The fake fetches the prepared files from the service's /m/ route with HEAD and GET and
checks their Content-Type against their bytes, then posts signed status callbacks, out
of order, to the service's /twilio/status.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from receiver.errors import ConfigError, OutboundError, TwilioApiError
from receiver.ratelimit import RateLimiter
from receiver.twilio.rest import RetryPolicy, TwilioRest
from receiver.twilio.signature import compute_signature
from tests.conftest import ACCOUNT_SID, AUTH, TOKEN
from tests.outbound.conftest import (
    API_KEY,
    API_SECRET,
    RECIPIENT,
    SENDER,
    TOLL_FREE,
    Running,
    req,
    write,
)
from tests.support import samples
from tests.support.fake_twilio import FakeTwilio
from tests.support.mediaserver import MediaServer
from tests.support.s3server import moto_server_fixture
from tests.support.services import free_port

moto = moto_server_fixture(scope="module", name="moto")


def creates(fake: FakeTwilio) -> int:
    return sum(
        1 for method, path in fake.requests if method == "POST" and path.endswith("/Messages.json")
    )


def wait_status(service: Running, sid: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = service.outbound.message(sid)
        if row and row["status"] == status and len(row["events"]) >= 4:
            return row
        time.sleep(0.05)
    raise AssertionError(f"{sid} did not reach {status}: {service.outbound.message(sid)}")


def status_of(service: Running, key: str) -> str | None:
    """The current status of the outbound row with idempotency key `key`."""
    row = service.services.outbound_index.by_key(key)
    return row.status if row is not None else None


def quick_retries(service: Running, fake: FakeTwilio) -> None:
    """The service's client with short backoff, so retry tests take milliseconds."""
    service.services.twilio.client = TwilioRest(
        ACCOUNT_SID,
        (API_KEY, API_SECRET),
        api_base=fake.url,
        retry=RetryPolicy(base=0.01, cap=0.05),
    )


# -- the happy path ----------------------------------------------------------------------


def test_heic_and_gif_url_sent_as_mms_and_tracked_to_delivered(
    service: Running, fake: FakeTwilio, media: MediaServer, tmp_path: Path
) -> None:
    heic = write(tmp_path, "shoes.heic", samples.heic(gps=True))
    gif = media.add("/promo.gif", samples.gif_animated(), content_type="image/gif")
    result = service.outbound.send(req(heic, gif))
    assert result.sid and result.sid.startswith("MM") and not result.duplicate
    (message,) = fake.outbound()
    assert message["num_media"] == "2" and message["body"] == "Back in stock"
    stored = sorted(m["content_type"] for m in fake.media[message["sid"]].values())
    assert stored == ["image/gif", "image/jpeg"]
    # Twilio fetched each prepared file from /m/ with HEAD then GET, without credentials.
    fetched = [(method, url.split("/m/")[0]) for method, url in fake.media_fetches]
    assert fetched == [("HEAD", service.url), ("GET", service.url)] * 2
    jpeg = next(
        d
        for sid, d in fake.media_bytes.items()
        if fake.media[message["sid"]][sid]["content_type"] == "image/jpeg"
    )
    assert not Image.open(io.BytesIO(jpeg)).getexif()  # GPS never left the building
    row = wait_status(service, result.sid, "delivered")
    assert [e["status"] for e in row["events"]] == ["sending", "delivered", "queued", "sent"]
    assert row["raw_dlr_done_date"]
    assert service.outbound.stats()["outbound"]["by_status"] == {"delivered": 1}


def test_undelivered_keeps_error_code_and_dlr_date(service: Running, fake: FakeTwilio) -> None:
    fake.outcomes[RECIPIENT] = ("undelivered", 30003)
    result = service.outbound.send(req(body="hello"))
    assert result.sid and result.sid.startswith("SM")
    row = wait_status(service, result.sid, "undelivered")
    assert row["error_code"] == 30003 and row["raw_dlr_done_date"]
    stats = requests.get(f"{service.url}/api/stats", headers=AUTH, timeout=5).json()
    assert stats["outbound"]["by_status"] == {"undelivered": 1}
    assert stats["outbound"]["by_error_code"] == {"30003": 1}


def test_media_link_headers(service: Running, tmp_path: Path) -> None:
    source = write(tmp_path, "Summer Sale Poster 2026.png", samples.png(120, 80))
    prepared = service.outbound.prepare(req(source))
    (item,) = prepared.media
    assert item.url is not None
    for method in ("HEAD", "GET"):
        resp = requests.request(method, item.url, timeout=5)
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert resp.headers["Content-Disposition"] == 'inline; filename="SummerSalePoster.png"'
        assert int(resp.headers["Content-Length"]) == item.size
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert len("SummerSalePoster.png") <= 20
    token = item.url.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert requests.get(f"{service.url}/m/{tampered}", timeout=5).status_code == 404
    links = service.services.links
    stem = ".".join(token.split(".")[:3])
    expired = links.sign(stem, int(time.time()) - 1)
    resp = requests.get(f"{service.url}/m/{expired}", timeout=5)
    assert resp.status_code == 410 and "expired" in resp.text
    assert requests.get(f"{service.url}/m/..%2Fsecrets.json", timeout=5).status_code == 404


def test_link_fallback_for_a_country_without_mms(
    service: Running, fake: FakeTwilio, tmp_path: Path
) -> None:
    source = write(tmp_path, "shoes.heic", samples.heic())
    result = service.outbound.send(req(source, to="+447700900123", fallback="link"))
    (message,) = fake.outbound()
    assert message["num_media"] == "0" and result.prepared is not None
    assert result.prepared.mode == "link"
    link = message["body"].splitlines()[-1]
    assert message["body"].startswith("Back in stock\n") and "/m/" in link
    resp = requests.get(link, timeout=5)
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(resp.content)).format == "JPEG"


def test_40mb_video_goes_as_a_link_with_the_fallback(
    service: Running, fake: FakeTwilio, tmp_path: Path
) -> None:
    source = write(tmp_path, "clip.mp4", samples.mp4_header(size=12_000_000))
    with pytest.raises(OutboundError, match="does not resize video"):
        service.outbound.send(req(source))
    result = service.outbound.send(req(source, fallback="link"))
    (message,) = fake.outbound()
    assert message["num_media"] == "0" and "/m/" in message["body"]
    assert result.prepared and result.prepared.notes and "sent as links" in result.prepared.notes[0]


# -- refusals and Twilio's errors: clear, and nothing half-sent ----------------------------------


def test_opted_out_by_stop_is_refused_before_twilio(service: Running, fake: FakeTwilio) -> None:
    params = [
        ("MessageSid", "SM" + "5" * 32),
        ("AccountSid", ACCOUNT_SID),
        ("From", RECIPIENT),
        ("To", SENDER),
        ("Body", "STOP"),
        ("NumMedia", "0"),
    ]
    url = f"{service.url}/twilio/messaging"
    resp = requests.post(
        url,
        data=params,
        timeout=5,
        headers={"X-Twilio-Signature": compute_signature(TOKEN, url, params)},
    )
    assert resp.status_code == 200
    with pytest.raises(OutboundError) as info:
        service.outbound.send(req(body="promo"))
    assert info.value.reason == "opted_out" and "START" in str(info.value)
    assert creates(fake) == 0
    assert service.outbound.stats()["outbound"]["by_status"] == {"refused": 1}


def test_21610_is_recorded_and_honoured_next_time(service: Running, fake: FakeTwilio) -> None:
    fake.opted_out.add(RECIPIENT)
    with pytest.raises(TwilioApiError) as info:
        service.outbound.send(req(body="promo"))
    assert info.value.code == 21610
    (row,) = service.services.index.opt_out_rows(RECIPIENT)
    assert (row["sender"], row["source"], row["opted_out"]) == (SENDER, "twilio-21610", True)
    with pytest.raises(OutboundError, match="opted out"):
        service.outbound.send(req(body="promo again"))
    assert creates(fake) == 1  # the second attempt never reached Twilio


def test_wrong_credentials(serve: Any, outbound_env: dict[str, str], fake: FakeTwilio) -> None:
    running = serve({**outbound_env, "TWILIO_API_SECRET": "not-the-secret"})
    with pytest.raises(TwilioApiError) as info:
        running.outbound.send(req(body="hi", idempotency_key="k-401"))
    assert info.value.status == 401 and "TWILIO_API_KEY" in str(info.value)
    row = running.services.outbound_index.by_key("k-401")
    assert row is not None and row.status == "pending" and not row.sid  # free to send once fixed
    assert fake.outbound() == []


def test_missing_credentials_record_nothing(
    serve: Any, outbound_env: dict[str, str], fake: FakeTwilio
) -> None:
    env = {k: v for k, v in outbound_env.items() if k != "TWILIO_ACCOUNT_SID"}
    running = serve(env)
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID"):
        running.outbound.send(req(body="hi"))
    assert running.services.outbound_index.recent() == [] and fake.requests == []


def test_429_then_201_sends_once(service: Running, fake: FakeTwilio) -> None:
    quick_retries(service, fake)
    fake.fail_next(2, 429, 20429, retry_after="0", path="Messages.json")
    result = service.outbound.send(req(body="hi"))
    # Callbacks may already have moved it on by the time the answer is recorded.
    assert result.status in ("queued", "sending", "sent", "delivered")
    assert len(fake.outbound()) == 1 and creates(fake) == 3


def test_persistent_500_then_a_rerun_sends_once(service: Running, fake: FakeTwilio) -> None:
    quick_retries(service, fake)
    fake.fail_next(4, 500, path="Messages.json")
    with pytest.raises(TwilioApiError, match="after 4 attempts"):
        service.outbound.send(req(body="hi", idempotency_key="k-500"))
    assert fake.outbound() == []
    assert status_of(service, "k-500") == "pending"
    result = service.outbound.send(req(body="hi", idempotency_key="k-500"))
    assert not result.duplicate and len(fake.outbound()) == 1


def test_malformed_json_answer_then_a_rerun_sends_once(service: Running, fake: FakeTwilio) -> None:
    fake.malformed_next(1, 201, path="Messages.json")  # nothing created, answer unreadable
    with pytest.raises(TwilioApiError, match="not JSON"):
        service.outbound.send(req(body="hi", idempotency_key="k-json"))
    assert status_of(service, "k-json") == "submitting"
    # At once, the outcome is unknown: the message is not sent again blindly.
    with pytest.raises(OutboundError) as info:
        service.outbound.send(req(body="hi", idempotency_key="k-json"))
    assert info.value.reason == "in_flight" and "run again in" in str(info.value)
    service.outbound.sender.in_flight_grace = 0.2
    result = service.outbound.send(req(body="hi", idempotency_key="k-json"), wait_in_flight=True)
    assert result.sid and not result.duplicate and len(fake.outbound()) == 1


def test_lost_answer_is_adopted_not_resent(service: Running, fake: FakeTwilio) -> None:
    fake.lose_answer_next(1)  # created on Twilio, answer lost on the way back
    with pytest.raises(TwilioApiError, match="may have reached Twilio"):
        service.outbound.send(req(body="hi", idempotency_key="k-lost"))
    result = service.outbound.send(req(body="hi", idempotency_key="k-lost"))
    (message,) = fake.outbound()
    assert result.duplicate and result.sid == message["sid"]


def test_failed_preflight_sends_nothing_and_cleans_up(
    serve: Any, outbound_env: dict[str, str], fake: FakeTwilio, tmp_path: Path
) -> None:
    running = serve(outbound_env)
    # The public URL now names a port where nothing answers: Twilio could not fetch.
    wrong = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(OutboundError) as info:
        running.outbound_with(public_url=wrong).send(req(write(tmp_path, "a.jpg", samples.jpeg())))
    assert info.value.reason == "preflight_failed"
    assert "RECEIVER_PUBLIC_URL" in str(info.value)
    assert creates(fake) == 0
    assert list(running.services.store.iter_keys("outbound/")) == []


def test_bad_status_callback_signature_changes_nothing(service: Running) -> None:
    params = [("MessageSid", "SM" + "9" * 32), ("MessageStatus", "delivered")]
    resp = requests.post(
        f"{service.url}/twilio/status",
        data=params,
        timeout=5,
        headers={"X-Twilio-Signature": "forged"},
    )
    assert resp.status_code == 403
    assert service.services.outbound_index.events("SM" + "9" * 32) == []


# -- rate limits --------------------------------------------------------------------------------


def test_per_sender_rate_limit(service: Running, fake: FakeTwilio) -> None:
    service.outbound.sender.limiter = RateLimiter()  # defaults: long code 1/s, toll-free 3/s
    started = time.monotonic()
    for i in range(2):
        service.outbound.send(req(body=f"long {i}"))
    long_code = time.monotonic() - started
    started = time.monotonic()
    for i in range(5):
        service.outbound.send(req(body=f"toll-free {i}", from_=TOLL_FREE))
    toll_free = time.monotonic() - started
    assert long_code >= 0.95  # the second message waited a second
    assert 0.6 <= toll_free < 2.5  # three at once, then one every third of a second
    assert len(fake.outbound()) == 7


# -- the JSON API ------------------------------------------------------------------------------


def test_api_send_is_idempotent(service: Running, fake: FakeTwilio, media: MediaServer) -> None:
    url = media.add("/p.jpg", samples.jpeg(320, 240), content_type="image/jpeg")
    body = {"to": RECIPIENT, "from": SENDER, "body": "hi", "media": [url]}
    headers = {**AUTH, "Idempotency-Key": "order-1234"}
    first = requests.post(f"{service.url}/api/messages", json=body, headers=headers, timeout=10)
    assert first.status_code == 201, first.text
    data = first.json()
    assert data["sid"].startswith("MM") and data["mode"] == "mms" and not data["duplicate"]
    again = requests.post(f"{service.url}/api/messages", json=body, headers=headers, timeout=10)
    assert again.status_code == 200 and again.json()["sid"] == data["sid"]
    assert len(fake.outbound()) == 1
    one = requests.get(f"{service.url}/api/outbound/{data['sid']}", headers=AUTH, timeout=5)
    assert one.status_code == 200 and one.json()["to"] == RECIPIENT
    listed = requests.get(f"{service.url}/api/outbound?limit=5", headers=AUTH, timeout=5).json()
    assert [m["sid"] for m in listed["messages"]] == [data["sid"]]


def test_api_outbound_pages_by_id(service: Running, fake: FakeTwilio) -> None:
    sids = []
    for n in range(3):
        body = {"to": RECIPIENT, "from": SENDER, "body": f"page {n}"}
        resp = requests.post(f"{service.url}/api/messages", json=body, headers=AUTH, timeout=10)
        assert resp.status_code == 201, resp.text
        sids.append(resp.json()["sid"])

    def page(**params: str) -> requests.Response:
        return requests.get(f"{service.url}/api/outbound", params=params, headers=AUTH, timeout=5)

    first = page(limit="2").json()["messages"]
    assert [m["sid"] for m in first] == sids[:0:-1]
    rest = page(limit="2", before=str(first[-1]["id"])).json()["messages"]
    assert [m["sid"] for m in rest] == sids[:1]
    # Any id the document allows is accepted, even one past every row.
    beyond = page(before="87178291199")
    assert beyond.status_code == 200 and len(beyond.json()["messages"]) == 3
    assert page(before=str(2**63 - 1)).status_code == 200
    for bad in ("0", "-1", "x", str(2**63)):
        refused = page(before=bad)
        assert refused.status_code == 400 and "before" in refused.json()["message"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"to": RECIPIENT, "from": SENDER, "media": ["/etc/passwd"]}, 422, "invalid_media"),
        ({"to": RECIPIENT, "from": SENDER, "body": "x" * 1601}, 422, "body_too_long"),
        ({"to": "call me", "from": SENDER, "body": "x"}, 422, "invalid_to"),
        ({"to": RECIPIENT, "from": SENDER, "body": 5}, 400, "invalid_request"),
        ({"to": RECIPIENT, "sender": SENDER}, 400, "invalid_request"),
        ([1, 2], 400, "invalid_request"),
    ],
)
def test_api_refusals(
    service: Running, fake: FakeTwilio, body: Any, status: int, error: str
) -> None:
    resp = requests.post(f"{service.url}/api/messages", json=body, headers=AUTH, timeout=5)
    assert (resp.status_code, resp.json()["error"]) == (status, error)
    assert resp.json()["message"]
    assert creates(fake) == 0


def test_api_needs_the_token(service: Running) -> None:
    for method, path in (
        ("POST", "/api/messages"),
        ("GET", "/api/stats"),
        ("GET", "/api/outbound"),
    ):
        resp = requests.request(method, service.url + path, json={}, timeout=5)
        assert resp.status_code == 401
    bad = requests.get(
        f"{service.url}/api/stats", timeout=5, headers={"Authorization": "Bearer wrong"}
    )
    assert bad.status_code == 401
    assert (
        requests.get(f"{service.url}/api/stats?days=0", headers=AUTH, timeout=5).status_code == 400
    )


def test_api_errors_from_twilio(service: Running, fake: FakeTwilio) -> None:
    fake.opted_out.add(RECIPIENT)
    resp = requests.post(
        f"{service.url}/api/messages",
        headers=AUTH,
        timeout=5,
        json={"to": RECIPIENT, "from": SENDER, "body": "hi"},
    )
    assert resp.status_code == 422
    assert (resp.json()["error"], resp.json()["code"]) == ("twilio_error", 21610)


# -- S3 hosting ---------------------------------------------------------------------------------


def test_s3_storage_hosts_with_presigned_urls(
    serve: Any,
    outbound_env: dict[str, str],
    fake: FakeTwilio,
    moto: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    bucket = moto.new_bucket()
    env = {**outbound_env, "RECEIVER_STORAGE_URL": f"s3://{bucket}/media"}
    running = serve(env)
    result = running.outbound_with(public_url="").send(
        req(write(tmp_path, "shoes.heic", samples.heic()))
    )
    assert result.prepared is not None
    (item,) = result.prepared.media
    assert item.url and "X-Amz-Signature" in item.url and item.url.startswith(moto.endpoint_url)
    (message,) = fake.outbound()
    assert [m["content_type"] for m in fake.media[message["sid"]].values()] == ["image/jpeg"]


def test_api_dry_run_and_openapi(service: Running, fake: FakeTwilio, media: MediaServer) -> None:
    url = media.add("/big.jpg", samples.jpeg(1600, 1200, quality=97), content_type="image/jpeg")
    body = {
        "to": RECIPIENT,
        "from": SENDER,
        "media": [url],
        "carrier_budget": "100KB",
        "dry_run": True,
    }
    resp = requests.post(f"{service.url}/api/messages", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == 200 and resp.json()["status"] == "dry-run"
    assert resp.json()["media"][0]["size"] <= 100_000
    assert fake.requests == []
    doc = requests.get(f"{service.url}/api/openapi.json", headers=AUTH, timeout=5).json()
    assert "post" in doc["paths"]["/api/messages"] and "get" in doc["paths"]["/api/stats"]
    assert "/api/outbound/{ref}" in doc["paths"] and "SendRequest" in doc["components"]["schemas"]
