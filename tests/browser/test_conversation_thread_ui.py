"""A Conversations thread in a real browser (Debian's chromium driven by Playwright).

The app runs on a loopback HTTP server; the fake Conversations API and MCS
(tests/support/fake_mcs.py) receive the reply's upload and message create.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from receiver.simulate import post_signed
from tests.browser.test_a11y import AXE, violations
from tests.conftest import ACCOUNT_SID, ADMIN_PASSWORD, TOKEN, base_env
from tests.support import samples
from tests.support.fake_mcs import FakeMcs
from tests.support.fake_twilio import FakeTwilio
from tests.support.loopback import serve_in_thread
from tests.support.services import free_port
from tests.support.webhooks import new_sid

pytestmark = pytest.mark.browser

OURS = "+15017122661"
SERVICE = "IS" + "e" * 32
MEMBERS = ["+15551239001", "+15551239002"]


def test_a_conversation_thread_is_opened_and_answered_with_a_photo(
    chromium: Any, tmp_path: Any
) -> None:
    from receiver import create_app
    from receiver.settings import Settings

    port = free_port()
    with (
        FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TOKEN, numbers=(OURS,)) as fake,
        FakeMcs(ACCOUNT_SID, TOKEN) as mcs,
    ):
        env = base_env(
            tmp_path,
            TWILIO_API_BASE=fake.url,
            TWILIO_MCS_BASE=mcs.url,
            TWILIO_CONVERSATIONS_BASE=mcs.url,
            RECEIVER_PUBLIC_URL=f"http://127.0.0.1:{port}",
            RECEIVER_MEDIA_HOSTS=f"{fake.host_port},{mcs.host_port}",
        )
        app = create_app(Settings.from_env(env))
        server = serve_in_thread(app, port)
        url = f"http://127.0.0.1:{port}"
        # The pages' CSP forbids injected scripts; only axe's tag needs the bypass.
        context = chromium.new_context(viewport={"width": 1000, "height": 900}, bypass_csp=True)
        try:
            conversation = mcs.add_conversation(SERVICE, MEMBERS, OURS)
            hook = f"{url}/twilio/conversations"
            common = [
                ("AccountSid", ACCOUNT_SID),
                ("ConversationSid", conversation),
                ("ChatServiceSid", SERVICE),
                ("RetryCount", "0"),
            ]
            added = [("EventType", "onConversationAdded"), ("FriendlyName", "Roof repair")]
            assert post_signed(hook, common + added, TOKEN).status_code == 200
            message = [
                ("EventType", "onMessageAdded"),
                ("MessageSid", new_sid("IM")),
                ("Index", "0"),
                ("Author", MEMBERS[1]),
                ("Body", "When will the technician come?"),
                ("Source", "SMS"),
            ]
            assert post_signed(hook, common + message, TOKEN).status_code == 200

            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{url}/inbox")
            page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{url}/inbox")
            page.get_by_role("link", name=re.compile(r"^Roof repair — conversation")).click()
            page.wait_for_url(f"{url}/inbox/{conversation}")
            first = page.locator("li.message.inbound").first
            assert MEMBERS[1] in first.inner_text()
            assert "When will the technician come?" in first.inner_text()

            page.get_by_label("Files").set_input_files(
                [{"name": "roof.png", "mimeType": "image/png", "buffer": samples.png(320, 240)}]
            )
            preview = page.locator("#reply-preview")
            preview.filter(has_text="will be sent as").wait_for()
            assert "roof.png will be sent as PNG" in preview.inner_text()
            assert mcs.created == []
            page.get_by_label("Your reply").fill("Tomorrow at 9, see the photo")
            page.get_by_role("button", name="Send reply").click()
            page.wait_for_url(f"{url}/inbox/{conversation}#reply")
            assert "Reply sent" in page.get_by_role("status").first.inner_text()

            ((into, form),) = mcs.created
            assert into == conversation and form["Body"] == "Tomorrow at 9, see the photo"
            uploaded = mcs.media_bytes(SERVICE, form["MediaSid"])
            assert uploaded is not None and uploaded[1] == "image/png"
            assert uploaded[0][:8] == b"\x89PNG\r\n\x1a\n"
            bubble = page.locator("li.message.outbound").last
            text = bubble.inner_text()
            assert "sent by admin" in text and "Tomorrow at 9" in text
            assert "image/png" in bubble.locator(".sent-files").inner_text()
            # axe-core (npm ci --prefix tests/browser): required in CI, used when installed.
            if AXE.exists() or os.environ.get("CI") == "true":
                assert violations(page) == []
        finally:
            context.close()
            server.shutdown()
            server.server_close()
            app.extensions["receiver"].close()
