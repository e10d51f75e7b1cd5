"""The browser UI in a real browser: Debian's chromium driven by Playwright.

A real HTTP server runs the app on loopback; messages arrive as signed
webhooks through the real pipeline, with media fetched from a loopback media
server: a JPEG, a PNG, an MP4 video (tests/fixtures/clip.mp4, made with
``ffmpeg -f lavfi -i testsrc=size=320x240:rate=15:duration=3 -c:v libx264
-profile:v baseline -pix_fmt yuv420p -movflags +faststart -an``), a vCard
whose name is an XSS payload, and Body/From XSS payloads.

The list page's screenshot is kept at artifacts/screenshots/messages.png (a CI
artifact, with the detail page's at artifacts/screenshots/message.png);
``UPDATE_SCREENSHOTS=1`` also refreshes docs/screenshot-messages.png, the
README's copy.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from receiver.simulate import SimulatedMedia, inbound_params, post_signed
from tests.conftest import ACCOUNT_SID, ADMIN_PASSWORD, AUTH, TOKEN, base_env
from tests.support import samples
from tests.support.loopback import serve_in_thread
from tests.support.mediaserver import MediaServer
from tests.support.traffic import TRAFFIC, Traffic
from tests.support.traffic import seed as seed_traffic

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "tests" / "fixtures" / "clip.mp4"
SCREENSHOT = ROOT / "artifacts" / "screenshots" / "messages.png"
README_SCREENSHOT = ROOT / "docs" / "screenshot-messages.png"
README_ANALYTICS = ROOT / "docs" / "screenshot-analytics.png"

BODY_XSS = '<script>window.__xss = "body"; alert("body")</script><img src=x onerror=alert(1)>'
FROM_XSS = "<img src=x onerror=alert('from')>"
VCARD_NAME_XSS = "<script>alert('card')</script><b onmouseover=alert(2)>Mallory</b>"


@dataclass
class Site:
    """The running app and what was sent to it."""

    url: str
    app: Any
    photos: str
    xss: str
    clip: str
    doomed: str


def _sid() -> str:
    return "MM" + os.urandom(16).hex()


def _send(
    site_url: str,
    server: MediaServer,
    *,
    from_: str,
    body: str,
    files: list[tuple[str, bytes, str]],
) -> str:
    sid = _sid()
    media = [
        SimulatedMedia(server.add(f"/{sid}/{name}", data, content_type=ctype), ctype)
        for name, data, ctype in files
    ]
    params = inbound_params(
        message_sid=sid,
        account_sid=ACCOUNT_SID,
        from_=from_,
        to="+15017122661",
        body=body,
        media=media,
    )
    resp = post_signed(f"{site_url}/twilio/messaging", params, TOKEN)
    assert resp.status_code == 200, resp.text
    return sid


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from receiver import create_app
    from receiver.settings import Settings

    tmp = tmp_path_factory.mktemp("ui")
    with MediaServer() as media:
        app = create_app(Settings.from_env(base_env(tmp, RECEIVER_MEDIA_HOSTS=media.host_port)))
        server = serve_in_thread(app)
        url = f"http://127.0.0.1:{server.server_port}"
        try:
            vcard_xss = f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{VCARD_NAME_XSS}\r\nTEL;TYPE=CELL:+15550100123\r\nEMAIL:mallory@example.com\r\nEND:VCARD\r\n".encode()
            photos = _send(
                url,
                media,
                from_="+15550001111",
                body="Photos of the damage to the rear door",
                files=[
                    ("door.jpg", samples.jpeg(800, 600, seed=3), "image/jpeg"),
                    ("detail.png", samples.png(300, 200), "image/png"),
                ],
            )
            clip = _send(
                url,
                media,
                from_="+15550003333",
                body="Short clip of the noise",
                files=[("clip.mp4", CLIP.read_bytes(), "video/mp4")],
            )
            xss = _send(
                url,
                media,
                from_=FROM_XSS,
                body=BODY_XSS,
                files=[("card.vcf", vcard_xss, "text/vcard")],
            )
            doomed = _send(
                url,
                media,
                from_="+15550004444",
                body="Please erase my data",
                files=[("me.jpg", samples.jpeg(200, 150, seed=9), "image/jpeg")],
            )
            app.extensions["receiver"].pipeline.shutdown(wait=True)
            yield Site(url, app, photos, xss, clip, doomed)
        finally:
            server.shutdown()
            server.server_close()
            app.extensions["receiver"].close()


@dataclass
class Tab:
    """A browser page plus what it saw: dialogs and CSP violations."""

    page: Any
    dialogs: list[str]
    csp_errors: list[str]


@pytest.fixture
def tab(chromium: Any, site: Site) -> Iterator[Tab]:
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    dialogs: list[str] = []
    csp_errors: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on(
        "console",
        lambda msg: csp_errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    try:
        yield Tab(page, dialogs, csp_errors)
    finally:
        context.close()


def login(tab: Tab, site: Site, next_path: str = "/messages") -> None:
    tab.page.goto(f"{site.url}{next_path}")
    assert "/login" in tab.page.url
    tab.page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    tab.page.get_by_role("button", name="Log in").click()
    tab.page.wait_for_url(re.compile(re.escape(site.url + next_path.split("?")[0])))


def rendered_images(page: Any) -> list[dict[str, Any]]:
    page.wait_for_load_state("load")
    # Thumbnails are loading="lazy", which the load event does not wait for.
    # On a timeout the assertions below name the image that did not render.
    with contextlib.suppress(Exception):
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=10_000)
    return page.eval_on_selector_all(
        "img",
        "els => els.map(e => ({src: e.getAttribute('src'), alt: e.alt, complete: e.complete, w: e.naturalWidth}))",
    )


# -- the tests ------------------------------------------------------------------------------


def test_login_is_required_and_wrong_password_is_refused(tab: Tab, site: Site) -> None:
    page = tab.page
    page.goto(f"{site.url}/messages")
    assert page.url.startswith(f"{site.url}/login?next=")
    page.get_by_label("Admin password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "Wrong password."
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{site.url}/messages")
    assert page.get_by_role("heading", name="Messages", exact=True).is_visible()
    assert not tab.csp_errors


def test_list_shows_messages_with_rendered_thumbnails(tab: Tab, site: Site) -> None:
    login(tab, site)
    page = tab.page
    for sid in (site.photos, site.xss, site.clip, site.doomed):
        assert page.locator(f"#h-{sid}").count() == 1
    images = rendered_images(page)
    assert len(images) >= 3
    for img in images:
        assert img["alt"], img
        assert img["complete"] and img["w"] > 0, img
    assert all("/thumbnail" in img["src"] for img in images)
    # Newest first: the last message sent is at the top.
    headings = page.locator("ol.messages h2").all_inner_texts()
    assert headings[0].startswith("+15550004444")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    # The README's copy changes only on request, so a test run leaves the tree clean.
    if not README_SCREENSHOT.exists() or os.environ.get("UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SCREENSHOT, README_SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000
    assert not tab.dialogs and not tab.csp_errors


def test_filters(tab: Tab, site: Site) -> None:
    login(tab, site)
    page = tab.page
    page.get_by_label("Text contains").fill("DAMAGE")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"q=DAMAGE"))
    assert page.locator("ol.messages > li").count() == 1
    assert page.locator(f"#h-{site.photos}").count() == 1
    page.get_by_role("link", name="Clear").click()
    page.get_by_label("Kind").select_option("video")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"kind=video"))
    assert page.locator("ol.messages > li").count() == 1
    assert page.locator(f"#h-{site.clip}").count() == 1
    page.get_by_label("Kind").select_option("")
    page.get_by_label("Sender").fill("+15550001111")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"from=%2B15550001111"))
    assert page.locator("ol.messages > li").count() == 1
    page.get_by_label("Sender").fill("")
    page.get_by_label("From date").fill("2001-01-01")
    page.get_by_label("To date").fill("2001-01-02")
    page.get_by_role("button", name="Filter").click()
    assert "No messages match these filters." in page.inner_text("main")


def test_open_a_message_and_see_its_images_and_facts(tab: Tab, site: Site) -> None:
    login(tab, site)
    page = tab.page
    page.get_by_role("link", name=re.compile(rf"\+15550001111 — message {site.photos}")).click()
    page.wait_for_url(f"{site.url}/messages/{site.photos}")
    images = rendered_images(page)
    assert len(images) == 2
    assert all(img["complete"] and img["w"] > 0 for img in images), images
    main = page.inner_text("main")
    assert "Photos of the damage to the rear door" in main
    assert "image/jpeg" in main and "image/png" in main
    assert "800 × 600" in main and "300 × 200" in main
    assert re.search(r"\b[0-9a-f]{64}\b", main)
    assert page.get_by_role("row", name=re.compile(r"^MessageSid")).is_visible()
    # The original opens inline with its own strict policy.
    href = page.locator(".attachment a.download").first.get_attribute("href")
    response = page.request.get(site.url + href)
    assert response.status == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"
    page.screenshot(path=str(SCREENSHOT.with_name("message.png")), full_page=True)
    assert not tab.csp_errors


def test_video_plays(tab: Tab, site: Site) -> None:
    login(tab, site, f"/messages/{site.clip}")
    page = tab.page
    video = page.locator("video")
    assert video.count() == 1
    assert video.get_attribute("controls") is not None
    page.eval_on_selector("video", "v => { v.muted = true; return v.play(); }")
    page.wait_for_function(
        "() => { const v = document.querySelector('video'); return v.currentTime > 0.2 && v.readyState >= 2; }",
        timeout=15_000,
    )
    state = page.eval_on_selector(
        "video", "v => ({w: v.videoWidth, h: v.videoHeight, d: v.duration, err: v.error})"
    )
    assert state["w"] == 320 and state["h"] == 240 and state["err"] is None
    # Seeking needs Range support.
    page.eval_on_selector("video", "v => { v.currentTime = 2.5; }")
    page.wait_for_function("() => document.querySelector('video').currentTime >= 2.5")
    assert not tab.csp_errors


def test_vcard_and_xss_payloads_are_shown_as_text(tab: Tab, site: Site) -> None:
    login(tab, site)
    page = tab.page
    # On the list page the payloads in From and Body are plain text.
    assert FROM_XSS in page.inner_text(f"#h-{site.xss}")
    page.locator(f"#h-{site.xss} a").click()
    page.wait_for_url(re.compile(r"/messages/MM"))
    card = page.get_by_role("group", name="Contact card")
    assert card.is_visible()
    assert card.locator(".card-name").inner_text() == VCARD_NAME_XSS
    assert card.get_by_role("link", name="+15550100123").get_attribute("href") == "tel:+15550100123"
    assert card.get_by_role("link", name="mallory@example.com").is_visible()
    assert page.locator("#body").inner_text() == BODY_XSS
    assert FROM_XSS in page.get_by_role("heading", level=1).inner_text()
    params = page.inner_text("table.params")
    assert BODY_XSS in params and FROM_XSS in params
    card.hover()
    page.locator(".card-name").hover()
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("script").count() == 0
    assert page.locator("main img").count() == 0  # the payload's <img> is text, not an element
    assert tab.dialogs == []
    # The sender page of that payload address works too.
    page.get_by_role("link", name=FROM_XSS).first.click()
    assert page.get_by_role("heading", level=1).inner_text() == f"Media from {FROM_XSS}"
    assert tab.dialogs == []


def test_delete_with_csrf(tab: Tab, site: Site) -> None:
    login(tab, site, f"/messages/{site.doomed}")
    page = tab.page
    # Without the form's token the server refuses, even with the session cookie.
    forged = page.request.post(f"{site.url}/messages/{site.doomed}/delete", form={"confirm": "yes"})
    assert forged.status == 400
    assert (
        requests.get(f"{site.url}/api/messages/{site.doomed}", headers=AUTH, timeout=5).status_code
        == 200
    )
    page.get_by_label("Yes, delete this message and its files").check()
    page.get_by_role("button", name="Delete message").click()
    page.wait_for_url(f"{site.url}/messages")
    assert (
        f"Deleted message {site.doomed} and 2 stored files."
        in page.get_by_role("status").inner_text()
    )
    assert page.locator(f"#h-{site.doomed}").count() == 0
    assert (
        requests.get(f"{site.url}/api/messages/{site.doomed}", headers=AUTH, timeout=5).status_code
        == 404
    )


def test_keyboard_and_phone(tab: Tab, site: Site) -> None:
    login(tab, site)
    page = tab.page
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    # The first control after skipping is in the main content, not the header.
    assert page.evaluate("() => document.activeElement.closest('main') !== null")
    page.set_viewport_size({"width": 375, "height": 740})
    for path in ("/messages", f"/messages/{site.photos}"):
        page.goto(site.url + path)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)


def test_inbox_and_a_thread_with_its_thumbnails_fit_a_phone(tab: Tab, site: Site) -> None:
    login(tab, site, "/inbox")
    page = tab.page
    page.get_by_role("link", name=re.compile(r"^\+15550001111 — thread with")).click()
    page.wait_for_url(re.compile(r"/inbox/"))
    assert "Photos of the damage to the rear door" in page.inner_text("main")
    images = rendered_images(page)
    assert len(images) == 2 and all(i["complete"] and i["w"] > 0 and i["alt"] for i in images)
    page.screenshot(path=str(SCREENSHOT.with_name("thread.png")), full_page=True)
    page.set_viewport_size({"width": 390, "height": 800})
    for path in ("/inbox", page.url.removeprefix(site.url)):
        page.goto(site.url + path)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)
    page.screenshot(path=str(SCREENSHOT.with_name("thread-390.png")), full_page=True)
    assert not tab.csp_errors and not tab.dialogs


ANALYTICS_SCREENSHOT = SCREENSHOT.with_name("analytics.png")


def test_analytics_renders_every_chart_and_its_csv_matches_the_api(tab: Tab, site: Site) -> None:
    # Outbound rows only: inbound ones would change what the message-list tests count.
    seed_traffic(site.app.extensions["receiver"].index.engine, Traffic(outbound=TRAFFIC.outbound))
    login(tab, site, "/analytics")
    page = tab.page
    # The default range (the last 30 days) holds the webhooks this module posted.
    inbound_total = int(page.locator(".totals div").first.locator("dd").inner_text())
    default = requests.get(f"{site.url}/api/stats", headers=AUTH, timeout=5).json()
    assert inbound_total == default["totals"]["inbound"] >= 3
    page.get_by_label("From date").fill("2024-05-01")
    page.get_by_label("To date").fill("2024-05-04")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"since=2024-05-01&until=2024-05-04"))
    charts = page.locator("svg.chart")
    assert charts.count() == 8
    for i in range(charts.count()):
        chart = charts.nth(i)
        title = chart.locator("title").text_content()
        assert title, i
        assert (chart.get_attribute("aria-label") or "").startswith(title)
        assert chart.get_attribute("role") == "img"
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 20, (title, box)
    assert page.locator("#chart-messages rect").count() > 0
    assert page.locator("#chart-funnel rect").count() == 5
    # The CSV link, fetched with the page's session, says what the JSON API says.
    href = page.get_by_role("link", name="CSV").get_attribute("href")
    csv_resp = page.request.get(site.url + href)
    assert csv_resp.status == 200
    rows = list(csv.DictReader(io.StringIO(csv_resp.text())))
    api = requests.get(
        f"{site.url}/api/stats",
        params={"since": "2024-05-01", "until": "2024-05-04"},
        headers=AUTH,
        timeout=5,
    ).json()
    assert [r["date"] for r in rows] == [s["date"] for s in api["series"]]
    for row, entry in zip(rows, api["series"], strict=True):
        assert {k: float(v) for k, v in row.items() if k != "date"} == pytest.approx(
            {k: v for k, v in entry.items() if k != "date"}
        )
    assert sum(int(r["outbound"]) for r in rows) == api["funnel"]["queued"] > 0
    page.screenshot(path=str(ANALYTICS_SCREENSHOT), full_page=True)
    # Keyboard: the date picker takes focus with a visible outline.
    page.get_by_label("From date").focus()
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    # A 390 px phone: no sideways scrolling, charts shrink with the page.
    page.set_viewport_size({"width": 390, "height": 800})
    page.reload()
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, overflow
    widest = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll('svg.chart'), "
        "s => s.getBoundingClientRect().right))"
    )
    assert widest <= 390
    page.screenshot(path=str(SCREENSHOT.with_name("analytics-390.png")), full_page=True)
    if not README_ANALYTICS.exists() or os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(ANALYTICS_SCREENSHOT, README_ANALYTICS)
    assert not tab.csp_errors and not tab.dialogs


def test_logout(tab: Tab, site: Site) -> None:
    login(tab, site)
    page = tab.page
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login"))
    assert "You are logged out." in page.inner_text("main")
    page.goto(f"{site.url}/messages")
    assert "/login" in page.url
    assert page.request.get(f"{site.url}/api/messages").status == 401
