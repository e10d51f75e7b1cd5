"""Playable copies and poster frames through the real webhook, pipeline, store, API and page,
with a real ffmpeg; on local disk and on S3 (moto's server)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import update

from receiver.index.schema import media, utcnow
from receiver.media.probe import probe
from tests.conftest import AUTH, base_env
from tests.support import avfiles
from tests.support.mediaserver import MediaServer
from tests.support.samples import jpeg
from tests.support.waiting import wait_for
from tests.support.webhooks import WebhookPoster, inbound_params, media_path, new_sid


@pytest.fixture
def app(make_app: Any, media_server: MediaServer) -> Any:
    return make_app(RECEIVER_MEDIA_HOSTS=media_server.host_port)


def post(app: Any, media_server: MediaServer, files: list[tuple[bytes, str]]) -> dict[str, Any]:
    """Post one MMS carrying `files`; its message JSON."""
    sid = new_sid()
    media = [
        (media_server.add(media_path(sid, i), data, content_type=ctype), ctype)
        for i, (data, ctype) in enumerate(files)
    ]
    resp = WebhookPoster(app.test_client()).post(inbound_params(sid, media=media))
    assert resp.status_code == 200
    got = app.test_client().get(f"/api/messages/{sid}", headers=AUTH)
    assert got.status_code == 200
    message: dict[str, Any] = got.get_json()
    return message


@pytest.fixture
def held(app: Any) -> Iterator[threading.Event]:
    """The copy thread held busy until the event is set (so "not made yet" is observable)."""
    release = threading.Event()
    app.extensions["receiver"].pipeline.playable.pool.submit(release.wait, 30)
    yield release
    release.set()


def playable(app: Any, media_id: int, **headers: str) -> Any:
    return app.test_client().get(f"/api/media/{media_id}/playable", headers={**AUTH, **headers})


def ready(app: Any, media_id: int) -> Any:
    """The playable answer once it is no longer 202."""
    assert wait_for(lambda: playable(app, media_id).status_code != 202, seconds=60)
    return playable(app, media_id)


def test_amr_voice_note_is_202_then_an_m4a_with_ranges(
    app: Any, media_server: MediaServer, held: threading.Event
) -> None:
    msg = post(app, media_server, [(avfiles.amr_voice_note(3), "audio/amr")])
    (item,) = msg["media"]
    assert (item["kind"], item["state"]) == ("audio", "stored")
    first = playable(app, item["id"])
    assert first.status_code == 202 and first.headers["Retry-After"] == "3"
    assert first.get_json()["error"] == "playable_pending"
    # The page says the copy is coming, and plays the original meanwhile.
    html = app.test_client().get(f"/messages/{msg['sid']}", headers=AUTH).get_data(as_text=True)
    assert "is being made" in html
    held.set()
    resp = ready(app, item["id"])
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "audio/mp4"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Disposition"].startswith("inline;")
    facts = probe(io.BytesIO(resp.data))
    assert facts is not None and facts.codecs == ("aac",)
    assert facts.duration_seconds == pytest.approx(3.0, abs=0.2)
    part = playable(app, item["id"], Range="bytes=0-99")
    assert part.status_code == 206 and part.data == resp.data[:100]
    assert part.headers["Content-Range"] == f"bytes 0-99/{len(resp.data)}"
    assert playable(app, item["id"], Range=f"bytes={len(resp.data)}-").status_code == 416
    # The original is untouched; the page now plays the copy.
    original = app.test_client().get(f"/api/media/{item['id']}/content", headers=AUTH)
    assert original.data[:6] == b"#!AMR\n"
    html = app.test_client().get(f"/messages/{msg['sid']}", headers=AUTH).get_data(as_text=True)
    assert f'src="/api/media/{item["id"]}/playable"' in html and "is being made" not in html


def test_3gp_video_gets_an_h264_copy_and_a_poster_thumbnail(
    app: Any, media_server: MediaServer
) -> None:
    msg = post(app, media_server, [(avfiles.video_3gp_amr(3), "video/3gpp")])
    (item,) = msg["media"]
    assert item["codecs"] == ["h263", "amr_nb"]
    resp = ready(app, item["id"])
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "video/mp4"
    facts = probe(io.BytesIO(resp.data))
    assert facts is not None and facts.codecs == ("h264", "aac")
    thumb = app.test_client().get(f"/api/media/{item['id']}/thumbnail", headers=AUTH)
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.data)) as im:
        assert im.size == (176, 144)
    index = app.extensions["receiver"].index
    assert index.hash_of(item["id"]) is not None  # the poster's perceptual hash
    html = app.test_client().get(f"/messages/{msg['sid']}", headers=AUTH).get_data(as_text=True)
    assert f'poster="/api/media/{item["id"]}/thumbnail"' in html
    listing = app.test_client().get("/messages", headers=AUTH).get_data(as_text=True)
    assert f'src="/api/media/{item["id"]}/thumbnail"' in listing  # the tile shows the poster
    # Erasing the message takes the poster and the copy with it.
    store = app.extensions["receiver"].store
    assert len(list(store.iter_keys("derived/"))) == 2
    assert app.test_client().delete(f"/api/messages/{msg['sid']}", headers=AUTH).status_code == 200
    assert list(store.iter_keys("derived/")) == [] and index.playable(item["id"]) is None


def test_mp4_that_plays_as_it_is_is_served_as_the_original(
    app: Any, media_server: MediaServer
) -> None:
    data = avfiles.mp4_h264(2, faststart=True)
    (item,) = post(app, media_server, [(data, "video/mp4")])["media"]
    resp = ready(app, item["id"])
    assert resp.status_code == 200 and resp.data == data
    assert resp.headers["Content-Type"] == "video/mp4"
    copy = app.extensions["receiver"].index.playable(item["id"])
    assert copy.state == "original" and copy.storage_key is None


def test_a_broken_video_ends_in_a_recorded_reason(app: Any, media_server: MediaServer) -> None:
    data = avfiles.video_3gp_amr(2)
    msg = post(app, media_server, [(data[: len(data) // 20], "video/3gpp")])
    (item,) = msg["media"]
    assert item["state"] == "stored"
    resp = ready(app, item["id"])
    assert resp.status_code == 422
    body = resp.get_json()
    assert (body["error"], body["reason"]) == ("playable_failed", "unreadable")
    assert body["detail"] and "content URL" in body["message"]
    html = app.test_client().get(f"/messages/{msg['sid']}", headers=AUTH).get_data(as_text=True)
    assert "No playable copy could be made (unreadable)" in html


def test_images_have_no_playable_copy(app: Any, media_server: MediaServer) -> None:
    (item,) = post(app, media_server, [(jpeg(), "image/jpeg")])["media"]
    resp = playable(app, item["id"])
    assert resp.status_code == 404 and resp.get_json()["error"] == "not_audio_video"
    assert playable(app, 999_999).status_code == 404
    assert app.test_client().get(f"/api/media/{item['id']}/playable").status_code == 401


def test_without_ffmpeg_the_original_is_played(
    make_app: Any, media_server: MediaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    app = make_app(RECEIVER_MEDIA_HOSTS=media_server.host_port)
    data = b"#!AMR\n" + bytes([7 << 3 | 0x04]) + bytes(31)
    (item,) = post(app, media_server, [(data, "audio/amr")])["media"]
    resp = playable(app, item["id"])
    assert resp.status_code == 200 and resp.data == data
    copy = app.extensions["receiver"].index.playable(item["id"])
    assert copy is not None and (copy.state, copy.reason) == ("failed", "no_ffmpeg")


def test_the_sweep_makes_copies_of_items_stored_before_copies_existed(
    app: Any, media_server: MediaServer, held: threading.Event
) -> None:
    (item,) = post(app, media_server, [(avfiles.amr_voice_note(1), "audio/amr")])["media"]
    index = app.extensions["receiver"].index
    pipeline = app.extensions["receiver"].pipeline
    # The queued copy never ran (as after a crash): no row yet, the item is found again.
    assert index.playable(item["id"]) is None
    assert [m.id for m in index.missing_playable(10, older_than=60, stale_after=600)] == []
    with index.begin() as conn:  # stored long ago
        conn.execute(
            update(media)
            .where(media.c.id == item["id"])
            .values(updated_at=utcnow() - timedelta(hours=1))
        )
    assert [m.id for m in index.missing_playable(10, older_than=60, stale_after=600)] == [
        item["id"]
    ]
    pipeline.playable.remake_missing(10, older_than=60)
    held.set()
    assert wait_for(lambda: (c := index.playable(item["id"])) and c.state == "ready", seconds=60)


def test_check_says_whether_ffmpeg_is_there(tmp_path: Any) -> None:
    from receiver.cli import main

    out = CliRunner().invoke(main, ["check"], env=base_env(tmp_path)).output
    assert "ffmpeg: ok  ffmpeg version" in out
    missing = CliRunner().invoke(
        main, ["check"], env={**base_env(tmp_path), "PATH": "/nonexistent"}
    )
    assert "ffmpeg: missing (apt-get install ffmpeg): no playable copies" in missing.output


def test_copies_go_to_s3(
    make_app: Any, media_server: MediaServer, moto_s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = moto_s3.new_bucket()
    for name, value in moto_s3.env().items():
        monkeypatch.setenv(name, value)
    app = make_app(
        RECEIVER_MEDIA_HOSTS=media_server.host_port,
        RECEIVER_STORAGE_URL=f"s3://{bucket}/media-test",
        **moto_s3.env(),
    )
    (item,) = post(app, media_server, [(avfiles.amr_voice_note(2), "audio/amr")])["media"]
    resp = ready(app, item["id"])
    assert resp.status_code == 302  # a presigned URL of the copy
    fetched = requests.get(resp.headers["Location"], timeout=10)
    facts = probe(io.BytesIO(fetched.content))
    assert fetched.status_code == 200 and facts is not None and facts.codecs == ("aac",)
    copy = app.extensions["receiver"].index.playable(item["id"])
    assert copy.state == "ready" and copy.storage_key.endswith(".playable.m4a")


def test_video_thumbnail_is_503_until_the_poster_is_made(
    app: Any, media_server: MediaServer, held: threading.Event
) -> None:
    (item,) = post(app, media_server, [(avfiles.video_3gp(2), "video/3gpp")])["media"]
    url = f"/api/media/{item['id']}/thumbnail"
    early = app.test_client().get(url, headers=AUTH)
    assert early.status_code == 503 and early.headers["Retry-After"] == "5"
    assert early.get_json()["error"] == "thumbnail_pending"
    held.set()
    assert ready(app, item["id"]).status_code == 200
    late = app.test_client().get(url, headers=AUTH)
    assert late.status_code == 200 and late.headers["Content-Type"] == "image/jpeg"


def test_a_rescan_match_removes_the_playable_copy_too(
    app: Any, media_server: MediaServer, tmp_path: Any
) -> None:
    from receiver.cli import main
    from tests.support.clamd import Clamd

    marker = "MMS-RECEIVER-LATER-VIDEO-SIGNATURE-7c2a"
    clip = avfiles.ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=size=176x144:rate=10:duration=2"),
        *("-c:v", "h263", "-metadata", f"title={marker}"),
        fmt="3gp",
    )
    (item,) = post(app, media_server, [(clip, "video/3gpp")])["media"]
    assert ready(app, item["id"]).status_code == 200
    store = app.extensions["receiver"].store
    copy = app.extensions["receiver"].index.playable(item["id"])
    assert store.exists(copy.storage_key)
    updated = Clamd(extra={"Test.Later.Video": marker.encode()})
    try:
        updated.start()
        env = base_env(tmp_path, RECEIVER_CLAMD_URL=updated.url)
        result = CliRunner().invoke(main, ["scan", "--since", "30d"], env=env)
        assert result.exit_code == 0 and "1 malware" in result.output, result.output
    finally:
        updated.cleanup()
    assert list(store.iter_keys("media/")) == [] and list(store.iter_keys("derived/")) == []
    assert playable(app, item["id"]).status_code == 404


def test_without_ffmpeg_the_copy_says_why_and_a_host_with_it_makes_it_later(
    make_app: Any, media_server: MediaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receiver.inbound.playable import PlayableCopies

    voice_note = avfiles.amr_voice_note(2)  # made with ffmpeg, before it is hidden
    monkeypatch.setenv("PATH", "/nonexistent")
    app = make_app(RECEIVER_MEDIA_HOSTS=media_server.host_port)
    msg = post(app, media_server, [(voice_note, "audio/amr")])
    (item,) = msg["media"]

    def copy_state() -> dict[str, Any]:
        got = app.test_client().get(f"/api/messages/{msg['sid']}", headers=AUTH).get_json()
        state: dict[str, Any] = got["media"][0]["playable"]
        return state

    assert wait_for(lambda: copy_state()["state"] == "failed")
    assert copy_state()["reason"] == "no_ffmpeg"
    original = playable(app, item["id"])  # the original meanwhile, not "being made" forever
    assert original.status_code == 200 and original.data == voice_note
    monkeypatch.undo()
    svc = app.extensions["receiver"]
    with svc.index.begin() as conn:  # stored before the sweep's grace
        conn.execute(
            update(media)
            .where(media.c.id == item["id"])
            .values(updated_at=utcnow() - timedelta(hours=1))
        )
    with_ffmpeg = PlayableCopies(svc.index, svc.store)
    try:
        with_ffmpeg.remake_missing(10, older_than=60)
        assert wait_for(lambda: copy_state()["state"] == "ready", seconds=60)
    finally:
        with_ffmpeg.shutdown()
    assert playable(app, item["id"]).headers["Content-Type"] == "audio/mp4"
