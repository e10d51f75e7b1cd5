"""Events through the API, the CLI, the browser page, `check`, /metrics and the /m/ media links."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.events.signing import new_secret
from tests.conftest import AUTH, base_env
from tests.support import samples
from tests.support.hookserver import HookServer
from tests.support.mediaserver import MediaServer
from tests.support.webhooks import WebhookPoster, inbound_params, new_sid
from tests.web.conftest import csrf_of, login

PUBLIC = "https://receiver.example.com"


def _deliver(app: Any) -> int:
    dispatcher = app.extensions["receiver"].events.dispatcher
    total = 0
    while n := dispatcher.run_once():
        total += n
    return total


@pytest.fixture
def events_app(make_app: Any, hooks: HookServer) -> Any:
    return make_app(
        RECEIVER_EVENT_HOSTS=f"127.0.0.1:{hooks.port}",
        RECEIVER_PUBLIC_URL="https://receiver.example.com",
    )


def test_endpoints_through_the_api(events_app: Any, hooks: HookServer) -> None:
    api = events_app.test_client()
    assert api.get("/api/endpoints").status_code == 401
    created = api.post(
        "/api/endpoints",
        json={"url": hooks.url + "/in", "events": ["message.received"], "description": "crm"},
        headers=AUTH,
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    assert set(body) >= {"id", "url", "events", "secret", "enabled", "disabled_reason"}
    assert body["secret"].startswith("whsec_") and body["events"] == ["message.received"]
    hooks.control(mode="ok", secrets=[body["secret"]])
    listed = api.get("/api/endpoints", headers=AUTH).get_json()["endpoints"]
    assert [e["id"] for e in listed] == [body["id"]] and "secret" not in listed[0]
    for bad, field in (
        ({"url": "http://10.0.0.1/x"}, "url"),
        ({"url": "gopher://x"}, "url"),
        ({"url": hooks.url, "events": ["nope"]}, "events"),
        ({}, "url"),
    ):
        answer = api.post("/api/endpoints", json=bad, headers=AUTH)
        assert answer.status_code == 400 and answer.get_json()["parameter"] == field

    sid = new_sid("SM")
    assert (
        WebhookPoster(api, base=PUBLIC).post(inbound_params(sid, body="hello")).status_code == 200
    )
    assert _deliver(events_app) == 1  # subscribed to message.received only
    (got,) = hooks.received()
    assert got["verified_with"] == 0 and got["type"] == "message.received"
    assert got["body"]["data"]["sid"] == sid and got["body"]["data"]["body"] == "hello"

    tested = api.post(f"/api/endpoints/{body['id']}/test", headers=AUTH)
    assert tested.status_code == 202
    _deliver(events_app)
    assert hooks.received()[-1]["type"] == "endpoint.test"

    page = api.get("/api/events", query_string={"limit": 2}, headers=AUTH).get_json()
    assert len(page["events"]) == 2 and page["next_cursor"]
    rest = api.get(
        "/api/events", query_string={"cursor": page["next_cursor"]}, headers=AUTH
    ).get_json()
    assert len(rest["events"]) == 1 and rest["next_cursor"] is None  # 3 events in all
    received = got["id"]
    one = api.get(f"/api/events/{received}", headers=AUTH).get_json()
    (attempt,) = one["attempts"]
    assert attempt["status"] == 204 and attempt["endpoint_id"] == body["id"]
    assert api.get("/api/events", query_string={"state": "bogus"}, headers=AUTH).status_code == 400
    assert api.get("/api/events/evt_nope", headers=AUTH).status_code == 404

    replayed = api.post(
        f"/api/endpoints/{body['id']}/replay", json={"event_id": received}, headers=AUTH
    )
    assert replayed.status_code == 202 and replayed.get_json()["replayed"] == 1
    since = api.post(f"/api/endpoints/{body['id']}/replay", json={"since": "1h"}, headers=AUTH)
    assert since.get_json()["replayed"] == 1  # only the subscribed type
    assert api.post(f"/api/endpoints/{body['id']}/replay", json={}, headers=AUTH).status_code == 400
    _deliver(events_app)
    again = [r for r in hooks.received() if r["id"] == received]
    assert len(again) == 2  # the same webhook-id: the receiver deduplicates

    assert api.delete(f"/api/endpoints/{body['id']}", headers=AUTH).status_code == 200
    assert api.delete(f"/api/endpoints/{body['id']}", headers=AUTH).status_code == 404
    assert api.post("/api/endpoints/ep_gone/test", headers=AUTH).status_code == 404


def test_the_browser_page_lists_and_replays_with_csrf(events_app: Any, hooks: HookServer) -> None:
    services = events_app.extensions["receiver"]
    endpoint, secret = services.events.add_endpoint(hooks.url + "/in", source="cli")
    hooks.control(mode="status:500", secrets=[secret])
    WebhookPoster(events_app.test_client(), base=PUBLIC).post(inbound_params(new_sid("SM")))
    services.events.dispatcher.run_once()
    browser = events_app.test_client()
    login(browser)
    page = browser.get("/events")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and endpoint.id in text and "HTTP 500" in text
    event_id = re.search(r"<code>(evt_[0-9a-f]+)</code>", text)
    assert event_id is not None
    action = f"/events/{event_id.group(1)}/replay/{endpoint.id}"
    assert browser.post(action).status_code == 400  # no CSRF token
    done = browser.post(action, data={"csrf_token": csrf_of(browser, "/events")})
    assert done.status_code == 303


def test_media_links_in_events_fetch_the_stored_file(make_app: Any, hooks: HookServer) -> None:
    jpeg = samples.jpeg()
    with MediaServer() as server:
        app = make_app(
            RECEIVER_MEDIA_HOSTS=server.host_port,
            RECEIVER_EVENT_HOSTS=f"127.0.0.1:{hooks.port}",
            RECEIVER_PUBLIC_URL="https://receiver.example.com",
        )
        services = app.extensions["receiver"]
        _, secret = services.events.add_endpoint(hooks.url, ["media.stored"], source="cli")
        hooks.control(mode="ok", secrets=[secret])
        client = app.test_client()
        url = server.add("/a.jpg", jpeg, content_type="image/jpeg")
        resp = WebhookPoster(client, base=PUBLIC).post(inbound_params(media=[(url, "image/jpeg")]))
        assert resp.status_code == 200
        services.pipeline.shutdown(wait=True)
    _deliver(app)
    (got,) = hooks.received()
    link = got["body"]["data"]["content_url"]
    assert link.startswith("https://receiver.example.com/m/i")
    fetched = client.get(link.removeprefix("https://receiver.example.com"))
    assert fetched.status_code == 200 and fetched.data == jpeg
    assert fetched.headers["Content-Disposition"].startswith("attachment")
    assert (
        client.get(link.removeprefix("https://receiver.example.com")[:-3] + "abc").status_code
        == 404
    )


def _cli(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_the_cli_manages_endpoints_and_lists_events(tmp_path: Path, hooks: HookServer) -> None:
    env = base_env(tmp_path, RECEIVER_EVENT_HOSTS=f"127.0.0.1:{hooks.port}")
    added = _cli(
        env,
        "endpoints",
        "add",
        hooks.url + "/x",
        "--events",
        "endpoint.test,media.stored",
        "--json",
    )
    assert added.exit_code == 1 and "unknown event type 'endpoint.test'" in added.output
    added = _cli(env, "endpoints", "add", hooks.url + "/x", "--description", "desk", "--json")
    assert added.exit_code == 0, added.output
    doc = json.loads(added.stdout)
    assert doc["id"].startswith("ep_") and doc["secret"].startswith("whsec_")
    hooks.control(mode="ok", secrets=[doc["secret"]])
    plain = _cli(env, "endpoints", "add", "http://192.168.1.1/x")
    assert plain.exit_code == 1 and "private" in plain.output
    listed = _cli(env, "endpoints", "list")
    assert doc["id"] in listed.output and "enabled" in listed.output and "desk" in listed.output
    tested = _cli(env, "endpoints", "test", doc["id"])
    assert tested.exit_code == 0 and "delivered" in tested.output and "204" in tested.output
    assert hooks.received()[0]["verified_with"] == 0
    rotated = _cli(env, "endpoints", "rotate-secret", doc["id"])
    new = rotated.stdout.strip()
    assert rotated.exit_code == 0 and new.startswith("whsec_") and new != doc["secret"]
    hooks.control(secrets=[new])
    _cli(env, "endpoints", "test", doc["id"])
    assert hooks.received()[-1]["verified_with"] == 0
    replay = _cli(env, "endpoints", "replay", doc["id"], "--since", "1h")
    assert replay.exit_code == 0 and replay.output.startswith(
        "0 event(s)"
    )  # tests are not replayed
    assert _cli(env, "endpoints", "replay", doc["id"]).exit_code == 2
    listing = _cli(env, "events")
    assert listing.output.count("endpoint.test") == 2
    assert _cli(env, "events", "--failed").output.strip() == "no failed events"
    checked = _cli(env, "check")
    assert "events: ok" in checked.output
    assert _cli(env, "endpoints", "remove", doc["id"]).exit_code == 0
    assert _cli(env, "endpoints", "remove", doc["id"]).exit_code == 1


def test_the_environment_declares_an_endpoint_and_check_reports_trouble(
    tmp_path: Path, hooks: HookServer
) -> None:
    secret = new_secret()
    env = base_env(
        tmp_path,
        RECEIVER_EVENT_URL=hooks.url + "/env",
        RECEIVER_EVENT_SECRET=secret,
        RECEIVER_EVENT_HOSTS=f"127.0.0.1:{hooks.port}",
    )
    hooks.control(mode="status:410", secrets=[secret])
    listed = _cli(env, "endpoints", "list")
    assert "ep_env" in listed.output and "/env" in listed.output
    _cli(env, "endpoints", "test", "ep_env")
    checked = _cli(env, "check")
    assert checked.exit_code == 1
    assert "endpoint ep_env" in checked.output and "410" in checked.output
    assert "events: oldest undelivered event is" in checked.output
    bad = _cli({**env, "RECEIVER_EVENT_SECRET": "nope"}, "check")
    assert bad.exit_code == 1 and "RECEIVER_EVENT_SECRET" in bad.output


def test_metrics_show_events(events_app: Any, hooks: HookServer) -> None:
    services = events_app.extensions["receiver"]
    _, secret = services.events.add_endpoint(hooks.url, source="cli")
    hooks.control(mode="ok", secrets=[secret])
    WebhookPoster(events_app.test_client(), base=PUBLIC).post(inbound_params(new_sid("SM")))
    _deliver(events_app)
    text = events_app.test_client().get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'mmsr_events{type="message.received"} 1.0' in text
    assert 'mmsr_event_deliveries_total{outcome="delivered"} 2.0' in text
    assert 'mmsr_event_deliveries_by_state{state="delivered"} 2.0' in text
    assert "mmsr_event_delivery_latency_seconds_count 2.0" in text
