"""The media workflow through the webhook: bad media, deadlines, outages, S3, retries."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image

from receiver.index.schema import utcnow
from tests.conftest import AUTH
from tests.support.mediaserver import MediaServer, Reply
from tests.support.samples import jpeg, png_bomb
from tests.support.waiting import wait_for
from tests.support.webhooks import WebhookPoster, inbound_params, media_path, new_sid


def message(app: Any, sid: str) -> dict[str, Any]:
    resp = app.test_client().get(f"/api/messages/{sid}", headers=AUTH)
    assert resp.status_code == 200, resp.data
    return resp.get_json()


@pytest.fixture
def setup(make_app: Any, media_server: MediaServer) -> Any:
    def build(**env: str) -> tuple[Any, WebhookPoster]:
        app = make_app(
            RECEIVER_MEDIA_HOSTS=media_server.host_port,
            RECEIVER_FETCH_DEADLINE="3",
            RECEIVER_LEASE_SECONDS="6",
            **env,
        )
        return app, WebhookPoster(app.test_client())

    return build


BAD_MEDIA = [
    ("empty", b"", "image/jpeg", {}, "rejected", "empty"),
    ("truncated-jpeg", jpeg(400, 300)[:900], "image/jpeg", {}, "rejected", "corrupt"),
    (
        "html-as-jpeg",
        b"<!DOCTYPE html><html><body>Error</body></html>",
        "image/jpeg",
        {},
        "rejected",
        "type_mismatch",
    ),
    (
        "svg-with-script",
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        "image/svg+xml",
        {},
        "rejected",
        "unsupported_type",
    ),
    ("png-bomb", png_bomb(), "image/png", {}, "rejected", "decompression_bomb"),
    ("over-cap-with-length", b"\xff" * 300_000, "image/jpeg", {}, "rejected", "too_large"),
    (
        "over-cap-without-length",
        b"\xff" * 300_000,
        "image/jpeg",
        {"content_length": None},
        "rejected",
        "too_large",
    ),
    (
        "401-body",
        b"<html>401 Unauthorized</html>",
        "image/jpeg",
        {"status": 401},
        "failed",
        "fetch_failed",
    ),
    ("reset-mid-body", jpeg() * 3, "image/jpeg", {"reset_after": 500}, "failed", "fetch_failed"),
]


@pytest.mark.parametrize(
    ("name", "body", "ctype", "options", "state", "reason"),
    BAD_MEDIA,
    ids=[b[0] for b in BAD_MEDIA],
)
def test_bad_media_gets_a_clear_state_and_reason(
    setup: Any,
    media_server: MediaServer,
    name: str,
    body: bytes,
    ctype: str,
    options: dict[str, Any],
    state: str,
    reason: str,
) -> None:
    app, poster = setup(RECEIVER_MAX_MEDIA_BYTES="200000")
    sid = new_sid()
    url = media_server.add(media_path(sid, 0), body, content_type=ctype, **options)
    resp = poster.post(inbound_params(sid, media=[(url, ctype)]))
    assert resp.status_code == 200
    (item,) = message(app, sid)["media"]
    assert (item["state"], item["reason"]) == (state, reason), item
    assert item["storage_key"] is None
    store = app.extensions["receiver"].store
    assert not list(store.iter_keys("media/")), "nothing rejected or failed is stored as media"


def test_slow_server_is_cut_at_the_deadline_and_retried_later(
    setup: Any, media_server: MediaServer
) -> None:
    app, poster = setup()
    sid = new_sid()
    path = media_path(sid, 0)
    url = media_server.add(path, b"x" * 200, content_type="image/jpeg", drip=1)
    started = time.monotonic()
    resp = poster.post(inbound_params(sid, media=[(url, "image/jpeg")]))
    assert time.monotonic() - started < 5
    assert resp.status_code == 200
    (item,) = message(app, sid)["media"]
    assert (item["state"], item["reason"]) == ("failed", "fetch_failed")
    # The host recovers; the next due sweep stores the file.
    data = jpeg()
    media_server.add(path, data, content_type="image/jpeg")
    pipeline = app.extensions["receiver"].pipeline
    assert pipeline.index.claim_media("probe", lease_seconds=1, limit=5, max_attempts=8) == []
    rows = pipeline.index.claim_media(
        pipeline.owner,
        lease_seconds=6,
        limit=5,
        max_attempts=8,
        now=utcnow() + timedelta(minutes=5),
    )
    for row in rows:
        pipeline.process_item(row)
    (item,) = message(app, sid)["media"]
    assert item["state"] == "stored" and item["size_bytes"] == len(data)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/x",
    ],
)
def test_redirects_to_private_addresses_are_blocked(
    setup: Any, media_server: MediaServer, target: str
) -> None:
    app, poster = setup()
    sid = new_sid()
    url = media_server.redirect(media_path(sid, 0), target)
    poster.post(inbound_params(sid, media=[(url, "image/jpeg")]))
    (item,) = message(app, sid)["media"]
    assert (item["state"], item["reason"]) == ("rejected", "blocked_host")


def test_non_allowlisted_media_host_is_refused(setup: Any) -> None:
    app, poster = setup()
    sid = new_sid()
    poster.post(inbound_params(sid, media=[("https://attacker.example/steal", "image/jpeg")]))
    (item,) = message(app, sid)["media"]
    assert (item["state"], item["reason"]) == ("rejected", "blocked_host")


def test_redirect_loop_fails(setup: Any, media_server: MediaServer) -> None:
    app, poster = setup()
    sid = new_sid()
    media_server.redirect("/loop-a", "/loop-b")
    media_server.redirect("/loop-b", "/loop-a")
    poster.post(inbound_params(sid, media=[(media_server.url("/loop-a"), "image/jpeg")]))
    (item,) = message(app, sid)["media"]
    assert item["state"] in ("failed", "rejected") and item["reason"] in (
        "fetch_failed",
        "blocked_host",
    )
    assert media_server.count("/loop-a") <= 3


def test_ten_media_in_one_message_are_fetched_concurrently(
    setup: Any, media_server: MediaServer
) -> None:
    app, poster = setup()
    sid = new_sid()
    media = [
        (
            media_server.add(
                media_path(sid, i), jpeg(100 + i, 100), content_type="image/jpeg", latency=0.3
            ),
            "image/jpeg",
        )
        for i in range(10)
    ]
    started = time.monotonic()
    resp = poster.post(inbound_params(sid, media=media))
    elapsed = time.monotonic() - started
    assert b"Got 10 photos" in resp.data
    items = message(app, sid)["media"]
    assert [i["state"] for i in items] == ["stored"] * 10
    assert [i["width"] for i in items] == [100 + i for i in range(10)]
    assert elapsed < 2.0, "ten 300 ms downloads must overlap"


def test_items_of_messages_answered_at_once_are_all_fetched_at_once(
    setup: Any, media_server: MediaServer
) -> None:
    # Four webhooks of ten media each in one process: every download must
    # start before the first can finish, not wait for a free media thread.
    app, _ = setup()
    latency = 1.0
    sids = [new_sid() for _ in range(4)]
    jobs = [
        inbound_params(
            sid,
            media=[
                (
                    media_server.add(
                        media_path(sid, i), jpeg(), content_type="image/jpeg", latency=latency
                    ),
                    "image/jpeg",
                )
                for i in range(10)
            ],
        )
        for sid in sids
    ]
    media_server.clear_log()
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda p: WebhookPoster(app.test_client()).post(p), jobs))
    assert [a.data.count(b"Got 10 photos") for a in answers] == [1, 1, 1, 1]
    arrivals = sorted(r.at for r in media_server.requests)
    assert len(arrivals) == 40
    assert arrivals[-1] - arrivals[0] < latency, "a download waited for another to finish"


def test_per_message_cap_is_enforced_across_items(setup: Any, media_server: MediaServer) -> None:
    app, poster = setup(RECEIVER_MAX_MEDIA_BYTES="100000", RECEIVER_MAX_MESSAGE_BYTES="150000")
    sid = new_sid()
    media = [
        (
            media_server.add(
                media_path(sid, i), b"%PDF-1.4\n" + b"0" * 90_000, content_type="application/pdf"
            ),
            "application/pdf",
        )
        for i in range(2)
    ]
    poster.post(inbound_params(sid, media=media))
    reasons = sorted(str(i["reason"]) for i in message(app, sid)["media"])
    assert "message_too_large" in reasons


def test_inline_deadline_answers_early_and_work_continues(
    setup: Any, media_server: MediaServer
) -> None:
    app, poster = setup(RECEIVER_INLINE_DEADLINE="0.5")
    sid = new_sid()
    data = jpeg()
    url = media_server.add(media_path(sid, 0), data, content_type="image/jpeg", latency=1.5)
    started = time.monotonic()
    resp = poster.post(inbound_params(sid, media=[(url, "image/jpeg")]))
    assert time.monotonic() - started < 1.4
    assert b"still arriving" in resp.data
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and message(app, sid)["media"][0]["state"] != "stored":
        time.sleep(0.1)
    assert message(app, sid)["media"][0]["state"] == "stored"


def test_thumbnails_wait_for_webhooks_in_flight_then_follow(
    setup: Any, media_server: MediaServer
) -> None:
    import os
    import threading

    app, poster = setup()
    slow, quick = new_sid(), new_sid()
    slow_url = media_server.add(
        media_path(slow, 0), jpeg(300, 200), content_type="image/jpeg", latency=1.5
    )
    quick_urls = [
        (
            media_server.add(media_path(quick, i), jpeg(160 + i, 120), content_type="image/jpeg"),
            "image/jpeg",
        )
        for i in range(3)
    ]
    answers: list[int] = []
    other = WebhookPoster(app.test_client())
    first = threading.Thread(
        target=lambda: answers.append(
            other.post(inbound_params(slow, media=[(slow_url, "image/jpeg")])).status_code
        )
    )
    first.start()
    assert wait_for(lambda: media_server.count(media_path(slow, 0)) == 1)
    assert poster.post(inbound_params(quick, media=quick_urls)).status_code == 200
    items = message(app, quick)["media"]
    assert [i["state"] for i in items] == ["stored"] * 3
    # The slow webhook is still waiting for its media: no thumbnail is made meanwhile.
    time.sleep(0.3)
    assert first.is_alive()
    assert [i["thumbnail_key"] for i in message(app, quick)["media"]] == [None] * 3
    first.join(10)
    assert answers == [200]
    assert wait_for(
        lambda: all(i["thumbnail_key"] for m in (quick, slow) for i in message(app, m)["media"])
    )
    store = app.extensions["receiver"].store
    for item in message(app, quick)["media"]:
        with store.open(item["thumbnail_key"]) as fp:
            assert Image.open(fp).size[0] <= 320
    # The thumbnail thread runs at a lower CPU priority than the webhooks.
    pipeline = app.extensions["receiver"].pipeline
    niceness = pipeline.derivatives.pool.submit(
        lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    ).result()
    assert niceness > os.getpriority(os.PRIO_PROCESS, 0)


def test_s3_storage_outage_then_recovery_loses_nothing(
    setup: Any, media_server: MediaServer, moto_s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    bucket = moto_s3.new_bucket("mms")
    app, poster = setup(RECEIVER_STORAGE_URL=f"s3://{bucket}/inbound")
    store = app.extensions["receiver"].store
    sids = [new_sid() for _ in range(3)]
    payloads = {sid: jpeg(120, 90 + n) for n, sid in enumerate(sids)}
    with moto_s3.outage():
        for sid in sids:
            url = media_server.add(media_path(sid, 0), payloads[sid], content_type="image/jpeg")
            assert poster.post(inbound_params(sid, media=[(url, "image/jpeg")])).status_code == 200
        states = [message(app, sid)["media"][0]["state"] for sid in sids]
        assert states == ["failed"] * 3
    pipeline = app.extensions["receiver"].pipeline
    rows = pipeline.index.claim_media(
        pipeline.owner,
        lease_seconds=6,
        limit=10,
        max_attempts=8,
        now=utcnow() + timedelta(minutes=5),
    )
    for row in rows:
        pipeline.process_item(row)
    for sid in sids:
        (item,) = message(app, sid)["media"]
        assert item["state"] == "stored"
        with store.open(item["storage_key"]) as fp:
            assert fp.read() == payloads[sid]
        head = moto_s3.client().head_object(Bucket=bucket, Key=f"inbound/{item['storage_key']}")
        assert head["ContentType"] == "image/jpeg"
        assert head["Metadata"]["sha256"] == item["sha256"]


def test_retry_command_requeues_exhausted_items(setup: Any, media_server: MediaServer) -> None:
    app, poster = setup(RECEIVER_MAX_ATTEMPTS="1")
    sid = new_sid()
    path = media_path(sid, 0)
    url = media_server.add(path, b"", status=503)
    poster.post(inbound_params(sid, media=[(url, "image/jpeg")]))
    assert message(app, sid)["media"][0]["state"] == "failed"
    index = app.extensions["receiver"].index
    assert (
        index.claim_media(
            "x", lease_seconds=5, limit=5, max_attempts=1, now=utcnow() + timedelta(days=1)
        )
        == []
    )
    media_server.add_replies(path, Reply(body=jpeg(), content_type="image/jpeg"))
    assert index.requeue_failed(sid) == 1
    assert app.extensions["receiver"].pipeline.sweep() == 1
    assert message(app, sid)["media"][0]["state"] == "stored"


def test_sweep_remakes_thumbnails_a_crash_left_missing(
    setup: Any, media_server: MediaServer
) -> None:
    from sqlalchemy import update

    from receiver.index.schema import media

    app, poster = setup()
    sid = new_sid()
    urls = [
        (
            media_server.add(media_path(sid, i), jpeg(180 + i, 120), content_type="image/jpeg"),
            "image/jpeg",
        )
        for i in range(2)
    ]
    assert poster.post(inbound_params(sid, media=urls)).status_code == 200
    assert wait_for(lambda: all(i["thumbnail_key"] for i in message(app, sid)["media"]))
    index = app.extensions["receiver"].index
    # As if the process died after storing the originals, before the thumbnails.
    with index.begin() as conn:
        conn.execute(
            update(media)
            .where(media.c.message_sid == sid)
            .values(thumbnail_key=None, updated_at=utcnow() - timedelta(minutes=5))
        )
    app.extensions["receiver"].pipeline.sweep()
    items = message(app, sid)["media"]
    assert all(i["thumbnail_key"] for i in items)
    store = app.extensions["receiver"].store
    for item in items:
        with store.open(item["thumbnail_key"]) as fp:
            assert Image.open(fp).format == "JPEG"
