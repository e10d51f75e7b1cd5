"""Events reach a real receiver process signed the Standard Webhooks way, through every fault.

The receiver verifies each body with the `standardwebhooks` library from
PyPI; these tests only read what it recorded.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from receiver.events.policy import RetryPolicy
from receiver.events.service import Events
from receiver.events.signing import new_secret
from receiver.index import MediaIndex
from receiver.index.schema import utcnow
from receiver.settings import Settings
from receiver.storage import open_store
from tests.events.conftest import Rig, make_dispatcher
from tests.index.rows import media_rows, message, sid
from tests.support.hookserver import HookServer
from tests.support.waiting import wait_for


def _endpoint(rig: Rig, **kwargs: object) -> tuple[str, str]:
    secret = new_secret()
    endpoint = rig.index.add_endpoint(rig.hooks.url + "/hooks", secret=secret, **kwargs)  # type: ignore[arg-type]
    rig.hooks.control(mode="ok", secrets=[secret])
    return endpoint.id, secret


def test_every_event_verifies_and_carries_its_object(rig: Rig) -> None:
    _endpoint(rig)
    rig.index.record_message(message(1, num_media=0), [])
    items = rig.index.insert_message(message(2), media_rows(1), lease_owner="w", lease_seconds=60)
    assert items is not None
    rig.index.finish_media(
        items[0].id,
        "w",
        state="stored",
        storage_key="AC/MM/0.jpg",
        kind="image",
        detected_type="image/jpeg",
    )
    rig.index.record_keyword("+15550001111", "+15550002222", "STOP", sid(1))
    assert rig.drain() == 6
    got = rig.hooks.received()
    assert [r["verified_with"] for r in got] == [0] * 6
    assert Counter(r["type"] for r in got) == {
        "message.received": 2,
        "message.completed": 2,
        "media.stored": 1,
        "optout.changed": 1,
    }
    ids = {e.id for e in rig.index.list_events()}
    assert {r["id"] for r in got} == ids
    stored = next(r["body"] for r in got if r["type"] == "media.stored")
    assert stored["timestamp"].endswith("Z")
    data = stored["data"]
    assert data["message_sid"] == sid(2) and data["state"] == "stored"
    assert data["content_url"].startswith("https://receiver.example.com/m/i")
    token = data["content_url"].rsplit("/", 1)[1]
    assert rig.links.verify_media(token) == items[0].id
    completed = next(
        r["body"]["data"]
        for r in got
        if r["type"] == "message.completed" and r["body"]["data"]["sid"] == sid(2)
    )
    assert completed["media"][0]["content_url"] == data["content_url"]
    assert completed["media"][0]["message_sid"] == sid(2)
    assert all(e.deliveries[0]["state"] == "delivered" for e in rig.index.list_events())


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [
        ("status:500", 500, "HTTP 500"),
        ("redirect", 302, "redirects are not followed"),
        ("reset", None, "connection failed"),
        ("slow:4", None, "timed out"),
    ],
)
def test_failures_are_retried_with_a_clear_state(
    rig: Rig, mode: str, status: int | None, error: str
) -> None:
    _endpoint(rig)
    rig.hooks.control(mode=mode)
    rig.index.record_message(message(3, num_media=0), [])
    rig.dispatcher.run_once()
    events = rig.index.list_events()
    states = [d for e in events for d in e.deliveries]
    assert {d["state"] for d in states} == {"pending"}
    tried = [e for e in events if e.deliveries[0]["attempts"] == 1]
    assert len(tried) >= 1
    one = rig.index.get_event(tried[0].id)
    assert one is not None
    (attempt,) = one.attempts
    assert attempt["status"] == status and error in attempt["error"]
    if status == 500:
        assert len(attempt["response"]) == 1024
    if mode in ("reset", "slow:4"):
        # An unreachable endpoint's other deliveries wait instead of failing too.
        assert [e.deliveries[0]["attempts"] for e in events].count(0) == 1
    # Back to normal: the retries go through, each event once more.
    rig.hooks.control(mode="ok")
    wait_for(lambda: rig.drain() == 0 and not rig.index.list_events(state="pending"), 15)
    assert not rig.index.list_events(state="pending")
    ok = [r for r in rig.hooks.received() if r["mode"] == "ok"]
    assert sorted(r["id"] for r in ok) == sorted(e.id for e in events)


def test_retries_end_as_failed_after_the_schedule(rig: Rig) -> None:
    _endpoint(rig)
    rig.hooks.control(mode="status:503")
    rig.index.record_message(message(4, num_media=0), [])
    rig.drain()
    failed = rig.index.list_events(state="failed")
    assert len(failed) == 2
    assert {e.deliveries[0]["attempts"] for e in failed} == {4}  # 1 + 3 retries


def test_gone_disables_the_endpoint(rig: Rig) -> None:
    endpoint_id, _ = _endpoint(rig)
    rig.hooks.control(mode="status:410")
    rig.index.record_message(message(5, num_media=0), [])
    rig.drain()
    endpoint = rig.index.get_endpoint(endpoint_id)
    assert endpoint is not None and not endpoint.enabled
    assert endpoint.disabled_reason is not None and "410" in endpoint.disabled_reason
    assert len(rig.hooks.received()) == 1
    states = sorted(d["state"] for e in rig.index.list_events() for d in e.deliveries)
    assert states == ["abandoned", "failed"]


def test_no_success_for_too_long_disables(rig: Rig) -> None:
    endpoint_id, _ = _endpoint(rig)
    rig.hooks.control(mode="status:500")
    with rig.index.begin() as conn:
        from receiver.index.schema import endpoints

        conn.execute(
            endpoints.update()
            .where(endpoints.c.id == endpoint_id)
            .values(created_at=utcnow() - timedelta(days=6))
        )
    rig.index.record_message(message(6, num_media=0), [])
    rig.dispatcher.run_once()
    endpoint = rig.index.get_endpoint(endpoint_id)
    assert endpoint is not None and not endpoint.enabled
    assert endpoint.disabled_reason == "no successful delivery for 5 days"


def test_private_addresses_are_refused(db_url: str, hooks: HookServer, tmp_path: Path) -> None:
    index = MediaIndex.open(db_url)
    try:
        # No RECEIVER_EVENT_HOSTS entry for the receiver: loopback is refused.
        dispatcher, _ = make_dispatcher(index, tmp_path, [])
        endpoint = index.add_endpoint(hooks.url + "/hooks", secret=new_secret())
        index.record_message(message(7, num_media=0), [])
        dispatcher.run_once()
        tried = [index.get_event(e.id) for e in index.list_events()]
        (attempt,) = [a for e in tried if e is not None for a in e.attempts]
        assert "loopback" in attempt["error"] and "RECEIVER_EVENT_HOSTS" in attempt["error"]
        assert hooks.received() == []
        settings = Settings.from_env({"RECEIVER_DATA_DIR": str(tmp_path / "d")})
        events = Events(
            settings, index, open_store((tmp_path / "m").as_uri()), dispatcher.payloads.sign_media
        )
        with pytest.raises(ValueError, match="RECEIVER_EVENT_HOSTS"):
            events.add_endpoint("http://10.1.2.3/hook", source="cli")
        with pytest.raises(ValueError, match="http"):
            events.add_endpoint("ftp://example.com/", source="cli")
        with pytest.raises(ValueError, match="unknown event type"):
            events.add_endpoint("https://93.184.216.34/", ["nope"], source="cli")
        assert index.get_endpoint(endpoint.id) is not None
        dispatcher.senders.close()
    finally:
        index.close()


def test_receiver_down_then_back_gets_everything_once(rig: Rig, tmp_path: Path) -> None:
    _, secret = _endpoint(rig)
    other = HookServer().start()
    try:
        removed = rig.index.add_endpoint(other.url + "/hooks", secret=new_secret())
        rig.index.remove_endpoint(removed.id)
        rig.hooks.stop()
        # Retries every 0.3 s: enough of them to outlast the outage.
        rig.dispatcher.policy = RetryPolicy(schedule=(0.3,) * 200)
        rig.dispatcher.poll = 0.2
        rig.dispatcher.start()
        try:
            for n in range(200):
                rig.index.record_message(message(1000 + n, num_media=0), [])
            assert wait_for(
                lambda: any(
                    d["attempts"] > 0
                    for e in rig.index.list_events(limit=400)
                    for d in e.deliveries
                ),
                10,
            )
            rig.hooks.start(secrets=[secret])
            assert wait_for(lambda: not rig.index.list_events(state="pending", limit=1), 60)
        finally:
            rig.dispatcher.stop()
        got = rig.hooks.received()
        ids = {e.id for e in rig.index.list_events(limit=1000)}
        assert len(ids) == 400
        assert {r["id"] for r in got} == ids  # nothing lost
        assert all(r["verified_with"] == 0 for r in got)
        assert len({r["id"] for r in got}) == len(ids)  # exactly once after deduplication
        assert other.received() == []  # the removed endpoint got nothing
        assert rig.index.list_events(state="failed") == []
    finally:
        other.stop()


def test_the_dispatcher_is_woken_by_its_own_commits(rig: Rig) -> None:
    _endpoint(rig)
    rig.dispatcher.poll = 60.0  # only the wake-up can deliver within the wait below
    rig.dispatcher.start()
    try:
        rig.dispatcher.index.events_due.clear()
        rig.index.record_message(message(8, num_media=0), [])
        assert wait_for(lambda: len(rig.hooks.received()) == 2, 10)
    finally:
        rig.dispatcher.stop()


def test_rotation_during_a_burst_verifies_with_one_of_both_secrets(rig: Rig) -> None:
    endpoint_id, old = _endpoint(rig)
    stop = threading.Event()
    rig.dispatcher.poll = 0.1
    rig.dispatcher.start()
    rotated: list[str] = []

    def burst() -> None:
        for n in range(60):
            rig.index.record_message(message(2000 + n, num_media=0), [])
            if n == 30:
                new = new_secret()
                rig.index.rotate_secret(endpoint_id, new, overlap=timedelta(hours=24))
                rotated.append(new)
        stop.set()

    writer = threading.Thread(target=burst)
    # The receiver knows both secrets, the new one first.
    writer.start()
    assert wait_for(lambda: bool(rotated), 10)
    rig.hooks.control(secrets=[rotated[0], old])
    writer.join()
    try:
        assert wait_for(lambda: not rig.index.list_events(state="pending", limit=1), 30)
    finally:
        rig.dispatcher.stop()
    got = rig.hooks.received()
    assert len({r["id"] for r in got}) == 120
    assert all(r["verified_with"] is not None for r in got)


def test_https_endpoints_get_sni_and_a_checked_certificate(tmp_path: Path) -> None:
    from receiver.events.delivery import HttpSender
    from tests.support.mediaserver import MediaServer, make_tls

    tls = make_tls(tmp_path, ["hooks.example.test"])
    with MediaServer(tls=tls) as server:
        names = {"hooks.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]}
        sender = HttpSender(
            [f"hooks.example.test:{server.port}", f"other.example.test:{server.port}"],
            resolver=lambda host, port: names[host],
            timeout=5,
            ca_bundle=tls.ca_file,
        )
        try:
            # The media server only serves GET: a 405 proves the TLS exchange went through.
            sent = sender.send("ep_a", f"https://hooks.example.test:{server.port}/in", b"{}", {})
            assert (sent.ok, sent.status, sent.error) == (False, 405, "HTTP 405")
            assert server.sni_names[-1] == "hooks.example.test"
            wrong = sender.send("ep_b", f"https://other.example.test:{server.port}/in", b"{}", {})
            assert wrong.status is None and wrong.error is not None
            assert "certificate" in wrong.error.lower() or "hostname" in wrong.error.lower()
        finally:
            sender.close()


def test_kept_connections_are_reused_and_replaced_when_the_endpoint_ends_them(
    tmp_path: Path,
) -> None:
    """Against nginx: one connection carries event after event; a connection the
    endpoint closed while idle, or after its request limit, is replaced without a
    failed delivery; a long answer is cut to its first 1 KB and its connection
    dropped; threads sending at once each get a connection."""
    import time

    from receiver.events.delivery import KEEP, HttpSender
    from tests.support import nginx
    from tests.support.services import free_port, require

    binary = nginx.nginx_binary()
    require(binary is not None, "nginx is not installed (apt-get install nginx)")
    assert binary is not None
    port = free_port()
    long_answer = "x" * 3000
    conf = nginx.write_config(
        tmp_path,
        "  log_format hooks '$uri $connection $connection_requests';\n"
        f"  access_log {tmp_path}/access.log hooks;\n"
        "  keepalive_timeout 1s;\n  keepalive_requests 4;\n"
        f"  server {{ listen 127.0.0.1:{port};\n"
        f"    location /long {{ return 202 '{long_answer}'; }}\n"
        "    location / { return 204; } }\n",
    )
    proc = nginx.start(binary, conf, port)
    sender = HttpSender([f"127.0.0.1:{port}"], timeout=5)

    def send(path: str) -> tuple[bool, int | None, str | None]:
        sent = sender.send("ep_a", f"http://127.0.0.1:{port}{path}", b'{"n": 1}', {"x-n": "1"})
        return sent.ok, sent.status, sent.response

    def log() -> list[tuple[str, str, int]]:
        lines = (tmp_path / "access.log").read_text().split("\n")
        return [(u, c, int(n)) for u, c, n in (line.split() for line in lines if line)]

    try:
        assert [send("/in") for _ in range(3)] == [(True, 204, "")] * 3
        time.sleep(1.5)  # nginx closes the idle connection
        assert [send("/in") for _ in range(6)] == [(True, 204, "")] * 6
        ok, status, response = send("/long")
        assert (ok, status, response) == (True, 202, long_answer[:KEEP])
        assert send("/in") == (True, 204, "")
        time.sleep(0.2)  # the access log is written after the answer
        seen = log()
        connections = [c for _, c, _ in seen]
        # 3 on the first connection; after the idle close, 4 (nginx's limit) then 2 on
        # the next ones; the long answer's connection carries nothing after it.
        assert [n for _, _, n in seen] == [1, 2, 3, 1, 2, 3, 4, 1, 2, 3, 1]
        assert len(set(connections)) == 4
        assert connections[-1] != connections[-2]
        # Threads sharing the sender: one uses the kept connection, the others their own.
        results: list[tuple[bool, int | None, str | None]] = []
        threads = [
            threading.Thread(target=lambda: results.extend(send("/in") for _ in range(5)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == [(True, 204, "")] * 20
    finally:
        sender.close()
        proc.terminate()
        proc.wait(10)


def test_endpoint_paths_are_percent_encoded_and_line_breaks_never_reach_the_wire(
    hooks: HookServer,
) -> None:
    """A non-ASCII path is sent percent-encoded; a header holding a line break is
    refused with a clear error instead of splitting the request."""
    from receiver.events.delivery import HttpSender

    sender = HttpSender([f"127.0.0.1:{hooks.port}"], timeout=5)
    hooks.control(mode="ok", secrets=[])
    try:
        sent = sender.send("ep_a", f"{hooks.url}/hooks/caf\u00e9 x", b"{}", {})
        assert (sent.ok, sent.status) == (True, 204)
        assert hooks.received()[-1]["path"] == "/hooks/caf%C3%A9%20x"
        split = sender.send("ep_a", f"{hooks.url}/hooks", b"{}", {"x-a": "1\r\nX-Injected: 1"})
        assert not split.ok and split.status is None
        assert split.error == (
            "cannot be sent: the endpoint URL or a header holds a line break or non-ASCII text"
        )
        assert len(hooks.received()) == 1  # nothing of the refused request was sent
    finally:
        sender.close()
