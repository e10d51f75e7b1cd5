"""A phone's 3GPP video (H.263 + AMR) and AMR voice note play on the message page in a real
browser (Debian's chromium through Playwright), through their playable copies."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from receiver.simulate import SimulatedMedia, inbound_params, post_signed
from tests.conftest import ACCOUNT_SID, ADMIN_PASSWORD, AUTH, TOKEN, base_env
from tests.support import avfiles
from tests.support.loopback import serve_in_thread
from tests.support.mediaserver import MediaServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.browser


@dataclass
class Site:
    url: str
    sid: str
    media_ids: list[int]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from receiver import create_app
    from receiver.settings import Settings

    tmp = tmp_path_factory.mktemp("playable-ui")
    files = [
        ("clip.3gp", avfiles.video_3gp_amr(3), "video/3gpp"),
        ("note.amr", avfiles.amr_voice_note(3), "audio/amr"),
    ]
    with MediaServer() as media:
        app = create_app(Settings.from_env(base_env(tmp, RECEIVER_MEDIA_HOSTS=media.host_port)))
        server = serve_in_thread(app)
        url = f"http://127.0.0.1:{server.server_port}"
        try:
            sid = "MM" + os.urandom(16).hex()
            params = inbound_params(
                message_sid=sid,
                account_sid=ACCOUNT_SID,
                from_="+15550002222",
                to="+15017122661",
                body="my video and a voice note",
                media=[
                    SimulatedMedia(media.add(f"/{sid}/{name}", data, content_type=ctype), ctype)
                    for name, data, ctype in files
                ],
            )
            assert post_signed(f"{url}/twilio/messaging", params, TOKEN).status_code == 200
            msg = requests.get(f"{url}/api/messages/{sid}", headers=AUTH, timeout=10).json()
            ids = [m["id"] for m in msg["media"]]

            def copies_ready() -> bool:
                return all(
                    requests.get(
                        f"{url}/api/media/{i}/playable", headers=AUTH, timeout=10
                    ).status_code
                    == 200
                    for i in ids
                )

            assert wait_for(copies_ready, seconds=60)
            yield Site(url, sid, ids)
        finally:
            server.shutdown()
            server.server_close()
            app.extensions["receiver"].close()


@pytest.fixture(scope="module")
def page(site: Site, chromium: Any) -> Iterator[Any]:
    tab = chromium.new_page()
    try:
        tab.set_default_timeout(15_000)
        tab.goto(f"{site.url}/messages/{site.sid}")
        tab.get_by_label("Admin password").fill(ADMIN_PASSWORD)
        tab.get_by_role("button", name="Log in").click()
        tab.wait_for_url(re.compile(re.escape(f"{site.url}/messages/{site.sid}")))
        yield tab
    finally:
        tab.close()


def test_the_browser_cannot_play_the_originals(page: Any) -> None:
    said = page.evaluate(
        "() => [document.createElement('audio').canPlayType('audio/amr'),"
        " document.createElement('video').canPlayType('video/3gpp; codecs=\"s263, samr\"')]"
    )
    assert said == ["", ""]


def test_3gp_video_plays_through_its_copy(page: Any, site: Site) -> None:
    video = page.locator("video")
    assert video.get_attribute("src") == f"/api/media/{site.media_ids[0]}/playable"
    assert video.get_attribute("poster") == f"/api/media/{site.media_ids[0]}/thumbnail"
    page.eval_on_selector("video", "v => { v.muted = true; return v.play(); }")
    page.wait_for_function(
        "() => { const v = document.querySelector('video');"
        " return v.readyState >= 2 && v.currentTime > 0.2; }"
    )
    state = page.eval_on_selector(
        "video", "v => ({w: v.videoWidth, h: v.videoHeight, d: v.duration, err: v.error})"
    )
    assert (state["w"], state["h"], state["err"]) == (176, 144, None)
    assert state["d"] == pytest.approx(3.0, abs=0.3)


def test_amr_voice_note_plays_through_its_copy(page: Any, site: Site) -> None:
    audio = page.locator("audio")
    assert audio.get_attribute("src") == f"/api/media/{site.media_ids[1]}/playable"
    page.eval_on_selector("audio", "a => { a.muted = true; return a.play(); }")
    page.wait_for_function(
        "() => { const a = document.querySelector('audio');"
        " return a.readyState >= 2 && a.currentTime > 0.2; }"
    )
    state = page.eval_on_selector("audio", "a => ({d: a.duration, err: a.error})")
    assert state["err"] is None and state["d"] == pytest.approx(3.0, abs=0.3)
