"""Live pages in a real browser: Debian's chromium against a real `serve` (two workers).

The test posts signed webhooks and status callbacks while a thread or the
inbox is open, and checks that the page changes without a reload (a marker
set on `window` survives).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from receiver.index import MediaIndex
from receiver.index.schema import outbound_messages
from receiver.simulate import SimulatedMedia, inbound_params, post_signed
from tests.conftest import ACCOUNT_SID, ADMIN_PASSWORD, TOKEN, base_env
from tests.support import samples
from tests.support.mediaserver import MediaServer
from tests.support.webhooks import new_sid

pytestmark = pytest.mark.browser

OURS = "+15017122661"
CUSTOMER = "+15550009001"
#: The promise is 2 s after the webhook's answer; the margin is for a loaded CI machine.
LIVE_MS = 4000


def _webhook(url: str, media: MediaServer, customer: str, body: str, photo: bool) -> str:
    sid = new_sid("MM" if photo else "SM")
    files = []
    if photo:
        path = f"/{sid}/photo.jpg"
        data = samples.jpeg(640, 480, seed=5)
        files.append(SimulatedMedia(media.add(path, data, content_type="image/jpeg"), "image/jpeg"))
    params = inbound_params(
        message_sid=sid, account_sid=ACCOUNT_SID, from_=customer, to=OURS, body=body, media=files
    )
    resp = post_signed(f"{url}/twilio/messaging", params, TOKEN)
    assert resp.status_code == 200, resp.text
    return sid


@pytest.fixture
def site(live_server: Any, tmp_path: Path) -> Iterator[tuple[str, MediaServer, str]]:
    """`serve` with a thread that has one inbound message and one reply still "sent"."""
    with MediaServer() as media:
        env = base_env(tmp_path, RECEIVER_MEDIA_HOSTS=media.host_port)
        server = live_server(env, ["--workers", "2", "--threads", "2"])
        _webhook(server.url, media, CUSTOMER, "Is my parcel on its way?", photo=False)
        reply = new_sid("SM")
        index = MediaIndex.open(f"sqlite:///{tmp_path / 'data' / 'receiver.db'}")
        now = datetime.now(UTC)
        with index.begin() as conn:
            conn.execute(
                insert(outbound_messages).values(
                    sid=reply,
                    to_addr=CUSTOMER,
                    from_addr=OURS,
                    body="Yes, it left this morning.",
                    media="[]",
                    status="sent",
                    created_at=now,
                    updated_at=now,
                )
            )
        index.close()
        yield server.url, media, reply


def _login(page: Any, url: str, path: str) -> None:
    page.goto(url + path)
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(re.escape(url + path)))
    page.evaluate("() => { window.__notReloaded = true; }")


def test_a_thread_shows_new_messages_thumbnails_and_statuses_without_reload(
    chromium: Any, site: tuple[str, MediaServer, str]
) -> None:
    url, media, reply = site
    context = chromium.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        _login(page, url, f"/inbox/{OURS}~{CUSTOMER}")
        outbound = page.locator(f'[data-entry="{reply}"]')
        assert outbound.locator(".state").inner_text() == "sent"

        sid = _webhook(url, media, CUSTOMER, "Here is the damaged box", photo=True)
        entry = page.locator(f'[data-entry="{sid}"]')
        entry.get_by_text("Here is the damaged box").wait_for(timeout=LIVE_MS)
        # The thumbnail follows as soon as it exists, still without a reload.
        page.wait_for_function(
            """sid => {
                const img = document.querySelector(`[data-entry="${sid}"] img`);
                return img && img.complete && img.naturalWidth > 0;
            }""",
            arg=sid,
            timeout=10_000,
        )

        params = [
            ("MessageSid", reply),
            ("MessageStatus", "delivered"),
            ("AccountSid", ACCOUNT_SID),
        ]
        assert post_signed(f"{url}/twilio/status", params, TOKEN).status_code in (200, 204)
        page.wait_for_function(
            """sid => document.querySelector(`[data-entry="${sid}"] .state`)
                .textContent.trim() === "delivered" """,
            arg=reply,
            timeout=LIVE_MS,
        )
        assert page.evaluate("() => window.__notReloaded === true")
        assert not [e for e in errors if "Content Security Policy" in e]
    finally:
        context.close()


def test_the_inbox_moves_a_thread_to_the_top_with_its_unread_count(
    chromium: Any, site: tuple[str, MediaServer, str]
) -> None:
    url, media, _ = site
    context = chromium.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    try:
        other = "+15550009002"
        _webhook(url, media, other, "A second customer", photo=False)
        _login(page, url, "/inbox")
        first = page.locator("[data-live-list] > li").first
        assert first.get_attribute("data-entry") == f"{OURS}~{other}"

        _webhook(url, media, CUSTOMER, "Any news?", photo=False)
        page.wait_for_function(
            """key => {
                const top = document.querySelector("[data-live-list] > li");
                return top && top.getAttribute("data-entry") === key
                    && top.querySelector(".badge") !== null;
            }""",
            arg=f"{OURS}~{CUSTOMER}",
            timeout=LIVE_MS,
        )
        assert first.locator(".badge").inner_text().startswith("2")
        assert page.evaluate("() => window.__notReloaded === true")
    finally:
        context.close()
