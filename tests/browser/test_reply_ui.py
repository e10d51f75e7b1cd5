"""Replying from the inbox in a real browser (Debian's chromium driven by Playwright).

The app runs on a loopback HTTP server with the fake Twilio REST API behind it:
the fake fetches each prepared file from the app's signed /m/ link and posts
signed status callbacks (POST /twilio/status) back, as Twilio does.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from receiver.simulate import inbound_params, post_signed
from tests.conftest import ACCOUNT_SID, ADMIN_PASSWORD, TOKEN, base_env
from tests.support import samples
from tests.support.fake_twilio import FakeTwilio
from tests.support.loopback import serve_in_thread
from tests.support.services import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.browser

OURS = "+15017122661"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "artifacts" / "screenshots" / "reply.png"
#: The README's copy, refreshed only with UPDATE_SCREENSHOTS=1 (a test run leaves the tree clean).
README_SCREENSHOT = ROOT / "docs" / "screenshot-reply.png"


@dataclass
class ReplySite:
    """The running app and the fake Twilio API it sends through."""

    url: str
    app: Any
    fake: FakeTwilio

    def inbound(self, customer: str, body: str) -> None:
        """A signed inbound webhook from `customer` to our number."""
        params = inbound_params(
            message_sid="SM" + os.urandom(16).hex(),
            account_sid=ACCOUNT_SID,
            from_=customer,
            to=OURS,
            body=body,
            media=[],
        )
        assert post_signed(f"{self.url}/twilio/messaging", params, TOKEN).status_code == 200

    def thread(self, customer: str) -> str:
        return f"{self.url}/inbox/{OURS}~{customer}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplySite]:
    from receiver import create_app
    from receiver.settings import Settings

    tmp = tmp_path_factory.mktemp("reply-ui")
    port = free_port()
    with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TOKEN, numbers=(OURS,)) as fake:
        env = base_env(
            tmp,
            TWILIO_API_BASE=fake.url,
            RECEIVER_PUBLIC_URL=f"http://127.0.0.1:{port}",
            RECEIVER_MEDIA_HOSTS=fake.host_port,
        )
        app = create_app(Settings.from_env(env))
        server = serve_in_thread(app, port)
        try:
            yield ReplySite(f"http://127.0.0.1:{port}", app, fake)
        finally:
            server.shutdown()
            server.server_close()
            app.extensions["receiver"].close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1000, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    try:
        yield tab
    finally:
        context.close()


def _login(page: Any, site: ReplySite, url: str) -> None:
    page.goto(url)
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(url)


def _sent_to(fake: FakeTwilio, customer: str) -> list[dict[str, Any]]:
    return [m for m in fake.outbound() if m["to"] == customer]


def test_reply_with_an_uploaded_heic_is_previewed_sent_as_jpeg_and_delivered(
    page: Any, site: ReplySite
) -> None:
    customer = "+15550007001"
    site.inbound(customer, "Where is my parcel?")
    _login(page, site, f"{site.url}/inbox")
    page.get_by_role("link", name=re.compile(rf"^{re.escape(customer)} — thread with")).click()
    page.wait_for_url(site.thread(customer))
    heic = samples.heic(640, 480)
    page.get_by_label("Files").set_input_files(
        [{"name": "photo.heic", "mimeType": "image/heic", "buffer": heic}]
    )
    preview = page.locator("#reply-preview")
    preview.filter(has_text="will be sent as").wait_for()
    assert re.search(r"photo\.heic will be sent as JPEG, \d+ KB", preview.inner_text())
    assert _sent_to(site.fake, customer) == []  # the preview sent nothing
    page.get_by_label("Your reply").fill("Here is the label")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    if not README_SCREENSHOT.exists() or os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(SCREENSHOT, README_SCREENSHOT)
    page.get_by_role("button", name="Send reply").click()
    page.wait_for_url(site.thread(customer) + "#reply")
    assert "Reply sent" in page.get_by_role("status").first.inner_text()
    sent = _sent_to(site.fake, customer)
    assert len(sent) == 1 and sent[0]["body"] == "Here is the label"
    media = list(site.fake.media[sent[0]["sid"]].values())
    assert [m["content_type"] for m in media] == ["image/jpeg"]
    assert site.fake.media_bytes[media[0]["sid"]][:3] == b"\xff\xd8\xff"
    # The fake posts signed status callbacks ending in "delivered".
    outbound = site.app.extensions["receiver"].outbound
    assert wait_for(lambda: outbound.message(sent[0]["sid"])["status"] == "delivered", 15)
    page.reload()
    bubble = page.locator("li.message.outbound").last
    assert "Status: delivered" in bubble.inner_text()
    assert "sent by admin" in bubble.inner_text()
    page.screenshot(path=str(SCREENSHOT.with_name("reply-delivered.png")), full_page=True)


def test_an_opted_out_customers_box_is_disabled_with_the_reason(page: Any, site: ReplySite) -> None:
    customer = "+15550007002"
    site.inbound(customer, "hello")
    site.inbound(customer, "STOP")
    _login(page, site, site.thread(customer))
    assert page.get_by_label("Your reply").is_disabled()
    assert page.get_by_role("button", name="Send reply").is_disabled()
    assert "opted out (replied STOP)" in page.locator("#reply").inner_text()


def test_a_double_submitted_reply_is_sent_once(page: Any, site: ReplySite) -> None:
    customer = "+15550007003"
    site.inbound(customer, "Can you call me?")
    _login(page, site, site.thread(customer))
    # The box fits a 390 px phone, and the keyboard reaches it with a visible outline.
    page.set_viewport_size({"width": 390, "height": 800})
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, overflow
    page.get_by_label("Your reply").focus()
    page.keyboard.type("Calling you at 3 pm")
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "reply-files"
    # Two submissions of the same form at once (what a double click does when nothing
    # stops the second one): both answer with the thread, one message goes out.
    statuses = page.evaluate(
        """async () => {
            const form = document.querySelector("form.reply-form");
            const post = () => fetch(form.action, {method: "POST", body: new FormData(form)});
            const answers = await Promise.all([post(), post()]);
            return answers.map(a => a.status);
        }"""
    )
    assert statuses == [200, 200]
    assert wait_for(lambda: len(_sent_to(site.fake, customer)) >= 1, 10)
    # The browser resubmits the same form once more (back, then send again).
    page.get_by_role("button", name="Send reply").click()
    page.wait_for_url(site.thread(customer) + "#reply")
    assert "already" in page.get_by_role("status").first.inner_text()
    assert len(_sent_to(site.fake, customer)) == 1
    assert page.locator("li.message.outbound").count() == 1


def test_files_dropped_on_the_box_are_attached_and_previewed(page: Any, site: ReplySite) -> None:
    customer = "+15550007004"
    site.inbound(customer, "Send me the form")
    _login(page, site, site.thread(customer))
    png = samples.png(300, 200)
    page.evaluate(
        """bytes => {
            const zone = document.querySelector(".dropzone");
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "form.png", {type: "image/png"}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        list(png),
    )
    preview = page.locator("#reply-preview")
    preview.filter(has_text="will be sent as").wait_for()
    assert re.search(r"form\.png will be sent as PNG, \d+ (KB|B)", preview.inner_text())
    assert page.evaluate("() => document.getElementById('reply-files').files[0].name") == "form.png"
    page.get_by_role("button", name="Send reply").click()
    page.wait_for_url(site.thread(customer) + "#reply")
    (sent,) = _sent_to(site.fake, customer)
    assert [m["content_type"] for m in site.fake.media[sent["sid"]].values()] == ["image/png"]
