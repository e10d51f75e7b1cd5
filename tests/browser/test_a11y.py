"""Accessibility and phones, in Debian's chromium driven by Playwright.

- axe-core (the npm package pinned in tests/browser/package.json; `.ci/run`
  installs it with `npm ci --prefix tests/browser`) runs inside each real
  page: no serious or critical violation is allowed.
- Keyboard only: Tab reaches a thread link with a visible focus outline,
  Enter opens the thread, and Tab goes on through the thread's links and
  controls, each with an outline.
- 390 px wide: no sideways scrolling on the inbox, a thread and analytics.

Screenshots of the inbox, a thread, analytics and a 390 px thread are kept
in artifacts/screenshots/ (CI artifacts); ``UPDATE_SCREENSHOTS=1`` also
refreshes the README's copies in docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from receiver.simulate import SimulatedMedia, inbound_params, post_signed
from tests.conftest import ACCOUNT_SID, ADMIN_PASSWORD, TOKEN, base_env
from tests.support import samples
from tests.support.loopback import serve_in_thread
from tests.support.mediaserver import MediaServer
from tests.support.services import require
from tests.support.traffic import TRAFFIC, Traffic
from tests.support.traffic import seed as seed_traffic

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"
OURS = "+15017122661"
CUSTOMER = "+15550001111"
THREAD = f"{OURS}~{CUSTOMER}"
BLOCKING = ("serious", "critical")


@dataclass
class Site:
    """The running app and the message it received."""

    url: str
    photos: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from receiver import create_app
    from receiver.settings import Settings

    tmp = tmp_path_factory.mktemp("a11y")
    with MediaServer() as media:
        app = create_app(Settings.from_env(base_env(tmp, RECEIVER_MEDIA_HOSTS=media.host_port)))
        server = serve_in_thread(app)
        url = f"http://127.0.0.1:{server.server_port}"
        try:
            services = app.extensions["receiver"]
            sid = "MM" + os.urandom(16).hex()
            files = [
                ("door.jpg", samples.jpeg(800, 600, seed=3), "image/jpeg"),
                ("detail.png", samples.png(300, 200), "image/png"),
            ]
            params = inbound_params(
                message_sid=sid,
                account_sid=ACCOUNT_SID,
                from_=CUSTOMER,
                to=OURS,
                body="Photos of the damage to the rear door",
                media=[
                    SimulatedMedia(media.add(f"/{sid}/{name}", data, content_type=ctype), ctype)
                    for name, data, ctype in files
                ],
            )
            assert post_signed(f"{url}/twilio/messaging", params, TOKEN).status_code == 200
            other = inbound_params(
                message_sid="MM" + os.urandom(16).hex(),
                account_sid=ACCOUNT_SID,
                from_="+15550002222",
                to=OURS,
                body="Is the parcel on its way?",
                media=[],
            )
            assert post_signed(f"{url}/twilio/messaging", other, TOKEN).status_code == 200
            services.pipeline.shutdown(wait=True)
            # A reply through the send path's writes, answered and then undelivered.
            row, _ = services.outbound_index.reserve(
                {
                    "idempotency_key": "a11y-reply",
                    "to_addr": CUSTOMER,
                    "from_addr": OURS,
                    "body": "Sorry to hear that, we will send a new door.",
                    "created_at": datetime.now(UTC) + timedelta(seconds=1),
                }
            )
            services.outbound_index.mark_submitted(
                row.id, {"sid": "SM" + os.urandom(16).hex(), "status": "delivered"}
            )
            seed_traffic(services.index.engine, Traffic(outbound=TRAFFIC.outbound))
            yield Site(url, sid)
        finally:
            server.shutdown()
            server.server_close()
            app.extensions["receiver"].close()


@pytest.fixture
def page(chromium: Any, site: Site) -> Iterator[Any]:
    # The pages' CSP forbids injected scripts; only axe's tag needs the bypass.
    context = chromium.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        context.close()


def login_page(page: Any, url: str, next_path: str) -> None:
    page.goto(f"{url}{next_path}")
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(re.escape(url + next_path)))


def violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations of the page as loaded."""
    page.wait_for_load_state("load")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    # Proof that axe ran its rules on this page, not on a blank one.
    assert result["testEngine"]["name"] == "axe-core" and result["url"] == page.url
    assert len(result["passes"]) > 10, result["passes"]
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]


def keep(page: Any, name: str) -> None:
    """A full-page screenshot in the CI artifacts (and the README's copy on request)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000
    docs = DOCS / name
    if not docs.exists() or os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, docs)


def test_axe_finds_no_serious_violation_on_any_page(page: Any, site: Site) -> None:
    require(AXE.exists(), f"axe-core is not installed: run `npm ci --prefix tests/browser` ({AXE})")
    page.goto(f"{site.url}/login")
    found = {"/login": violations(page)}
    login_page(page, site.url, "/inbox")
    for path in (
        "/inbox",
        f"/inbox/{THREAD}",
        "/messages",
        f"/messages/{site.photos}",
        "/analytics?since=2024-05-01&until=2024-05-04",
        "/events",
    ):
        response = page.goto(site.url + path)
        assert response is not None and response.status == 200, path
        found[path] = violations(page)
    assert {path: v for path, v in found.items() if v} == {}


def focus_state(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => {
            const e = document.activeElement;
            const s = getComputedStyle(e);
            return {tag: e.tagName, href: e.getAttribute('href'), inMain: !!e.closest('main'),
                    outline: s.outlineStyle, width: parseFloat(s.outlineWidth)};
        }"""
    )


def test_keyboard_only_inbox_to_thread_with_visible_focus(page: Any, site: Site) -> None:
    login_page(page, site.url, "/inbox")
    seen = []
    for _ in range(30):
        page.keyboard.press("Tab")
        state = focus_state(page)
        seen.append(state)
        assert state["outline"] != "none" and state["width"] >= 2, state
        if state["tag"] == "A" and (state["href"] or "").startswith("/inbox/"):
            break
    else:
        pytest.fail(f"Tab never reached a thread link: {seen}")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/inbox/[^/]+$"))
    assert page.get_by_role("heading", level=1).is_visible()
    # On the thread page Tab walks its links and controls (the reply form when there is one).
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        state = focus_state(page)
        if state["tag"] == "BODY":
            break
        assert state["outline"] != "none" and state["width"] >= 2, state
        reached.append(state)
    in_main = [s for s in reached if s["inMain"]]
    assert any(s["href"] == "/inbox" for s in in_main), reached
    assert any((s["href"] or "").startswith("/messages/") for s in in_main), reached


def test_pages_fit_a_390_px_phone_and_screenshots(page: Any, site: Site) -> None:
    login_page(page, site.url, "/inbox")
    keep(page, "inbox.png")
    page.goto(f"{site.url}/inbox/{THREAD}")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    keep(page, "thread.png")
    page.goto(f"{site.url}/analytics?since=2024-05-01&until=2024-05-04")
    keep(page, "analytics.png")
    page.set_viewport_size({"width": 390, "height": 800})
    for path in ("/inbox", f"/inbox/{THREAD}", "/analytics?since=2024-05-01&until=2024-05-04"):
        page.goto(site.url + path)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)
    page.goto(f"{site.url}/inbox/{THREAD}")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    keep(page, "thread-390.png")
