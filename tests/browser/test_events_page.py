"""The `/events` page in Debian's chromium: a failed delivery is listed and replayed by a click."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from receiver.simulate import inbound_params, post_signed
from tests.conftest import ACCOUNT_SID, ADMIN_PASSWORD, TOKEN, base_env
from tests.support.hookserver import HookServer
from tests.support.loopback import serve_in_thread
from tests.support.waiting import wait_for

pytestmark = pytest.mark.browser


@dataclass
class EventsSite:
    url: str
    services: Any
    hooks: HookServer


@pytest.fixture(scope="module")
def events_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventsSite]:
    from receiver import create_app
    from receiver.settings import Settings

    hooks = HookServer().start()
    tmp = tmp_path_factory.mktemp("events-ui")
    app = create_app(
        Settings.from_env(base_env(tmp, RECEIVER_EVENT_HOSTS=f"127.0.0.1:{hooks.port}"))
    )
    server = serve_in_thread(app)
    try:
        yield EventsSite(
            f"http://127.0.0.1:{server.server_port}", app.extensions["receiver"], hooks
        )
    finally:
        server.shutdown()
        server.server_close()
        app.extensions["receiver"].close()
        hooks.stop()


def test_a_failed_delivery_is_shown_and_replayed_from_the_page(
    chromium: Any,
    events_site: EventsSite,
) -> None:
    services, hooks = events_site.services, events_site.hooks
    endpoint, secret = services.events.add_endpoint(hooks.url + "/in", source="cli")
    hooks.control(mode="status:500", secrets=[secret])
    sid = "SM" + "e" * 32
    params = inbound_params(
        message_sid=sid,
        account_sid=ACCOUNT_SID,
        from_="+15550007777",
        to="+15017122661",
        body="event page",
        media=[],
    )
    assert post_signed(f"{events_site.url}/twilio/messaging", params, TOKEN).status_code == 200
    assert services.events.dispatcher.run_once() == 2  # received and completed, both refused

    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(f"{events_site.url}/events")
        page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(re.escape(events_site.url + "/events")))
        table = page.locator("table.deliveries").first
        assert endpoint.id in page.locator("table.endpoints").inner_text()
        rows = table.locator("tbody tr")
        assert rows.count() == 2
        assert "500" in rows.first.inner_text()
        event_id = rows.first.locator("code").first.inner_text()

        hooks.control(mode="ok")
        rows.first.get_by_role("button", name="Replay").click()
        page.wait_for_url(re.compile(re.escape(events_site.url + "/events")))
        assert f"{event_id} is due again to {endpoint.id}" in page.content()

        services.events.dispatcher.run_once()

        def answered_ok() -> list[dict[str, Any]]:
            return [r for r in hooks.received() if r["id"] == event_id and r["mode"] == "ok"]

        assert wait_for(lambda: len(answered_ok()) == 1, 10)
        assert answered_ok()[0]["verified_with"] == 0  # its Standard Webhooks signature held
        page.reload()
        replayed = page.locator("table.deliveries").first.locator("tbody tr", has_text=event_id)
        assert "delivered" in replayed.first.inner_text()
    finally:
        context.close()
