"""`/metrics`: webhook outcomes, media verdicts, bytes, latency, backlog, outbound statuses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from receiver.inbound.pipeline import ItemOutcome
from receiver.metrics import Metrics
from receiver.simulate import inbound_params
from receiver.twilio.signature import compute_signature
from tests.conftest import ACCOUNT_SID, TOKEN, base_env

WEBHOOK = "http://localhost/twilio/messaging"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_observer_counts_verdicts_kinds_bytes_and_latency() -> None:
    metrics = Metrics()
    metrics.observe_item(ItemOutcome(1, "stored", None, 1000, "image"), 0.2)
    metrics.observe_item(ItemOutcome(2, "stored", None, 500, "image"), 0.3)
    metrics.observe_item(ItemOutcome(3, "rejected", "type_mismatch", 10, "document"), 0.01)
    metrics.observe_item(ItemOutcome(4, "failed", "fetch_failed", None, None), 7.0)
    metrics.observe_item(ItemOutcome(5, "pending", "index_unavailable", None, None), 0.1)
    text = metrics.render()[0].decode()
    assert value(text, "mmsr_media_total", state="stored", reason="none", kind="image") == 2
    assert (
        value(text, "mmsr_media_total", state="rejected", reason="type_mismatch", kind="document")
        == 1
    )
    assert (
        value(text, "mmsr_media_total", state="failed", reason="fetch_failed", kind="unknown") == 1
    )
    # An item that went back to the queue is no verdict.
    assert not any(
        k[0] == "mmsr_media_total" and ("state", "pending") in k[1] for k in samples(text)
    )
    assert value(text, "mmsr_stored_bytes_total", kind="image") == 1500
    assert value(text, "mmsr_media_fetch_seconds_count", state="stored") == 2
    assert value(text, "mmsr_media_fetch_seconds_sum", state="stored") == pytest.approx(0.5)
    assert value(text, "mmsr_media_fetch_seconds_bucket", state="stored", le="0.25") == 1
    assert value(text, "mmsr_media_fetch_seconds_bucket", state="failed", le="5.0") == 0
    assert value(text, "mmsr_media_fetch_seconds_bucket", state="failed", le="10.0") == 1


def test_two_metrics_objects_do_not_share_counts() -> None:
    first, second = Metrics(), Metrics()
    first.webhook("recorded")
    assert value(first.render()[0].decode(), "mmsr_webhooks_total", outcome="recorded") == 1
    assert value(second.render()[0].decode(), "mmsr_webhooks_total", outcome="recorded") == 0


FORM = "application/x-www-form-urlencoded"


def post(client: Any, path: str, params: list[tuple[str, str]], signature: str) -> Any:
    return client.post(
        path, data=urlencode(params), content_type=FORM, headers={"X-Twilio-Signature": signature}
    )


def signed_post(client: Any, params: list[tuple[str, str]], url: str = WEBHOOK) -> Any:
    signature = compute_signature(TOKEN, url, params)
    return post(client, url.removeprefix("http://localhost"), params, signature)


def message_params(sid: str, media: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    from receiver.simulate import SimulatedMedia

    return inbound_params(
        message_sid=sid,
        account_sid=ACCOUNT_SID,
        from_="+15550001111",
        to="+15550002222",
        body="hi",
        media=[SimulatedMedia(u, t) for u, t in (media or [])],
    )


def test_endpoint_counts_each_webhook_outcome(client: Any) -> None:
    sid = "SM" + "1" * 32
    assert signed_post(client, message_params(sid)).status_code == 200
    assert signed_post(client, message_params(sid)).status_code == 200  # Twilio's retry
    assert post(client, "/twilio/messaging", message_params(sid), "bm90IGl0").status_code == 403
    bad = [("MessageSid", "not-a-sid"), ("AccountSid", ACCOUNT_SID)]
    assert signed_post(client, bad).status_code == 400
    big = [("Body", "x" * 70_000)]
    assert post(client, "/twilio/messaging", big, "x").status_code == 413
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    text = resp.get_data(as_text=True)
    answered = {k[1][0][1]: v for k, v in samples(text).items() if k[0] == "mmsr_webhooks_total"}
    assert answered.pop("forbidden") == 1
    assert answered.pop("malformed") == 1
    assert answered.pop("too_large") == 1
    # 200s: "recorded" and "duplicate" when the view names them, else "accepted".
    assert sum(answered.values()) == 2
    assert set(answered) <= {"recorded", "duplicate", "accepted"}
    if "recorded" in answered:
        assert answered == {"recorded": 1, "duplicate": 1}


def test_backlog_is_read_from_the_index_at_scrape_time(app: Any, client: Any) -> None:
    index = app.extensions["receiver"].index
    row = {
        "sid": "MM" + "2" * 32,
        "account_sid": ACCOUNT_SID,
        "direction": "inbound",
        "from_addr": "+15550001111",
        "from_channel": "sms",
        "to_addr": "+15550002222",
        "to_channel": "sms",
        "body": "",
        "num_media": 3,
        "params": "[]",
    }
    media = [
        {"idx": i, "url": f"https://api.twilio.com/m/{i}", "declared_type": "image/jpeg"}
        for i in range(3)
    ]
    before = client.get("/metrics").get_data(as_text=True)
    assert value(before, "mmsr_media_backlog", state="pending") == 0
    assert index.record_message(row, media)
    after = client.get("/metrics").get_data(as_text=True)
    assert value(after, "mmsr_media_backlog", state="pending") == 3
    assert value(after, "mmsr_media_items", state="pending") == 3
    assert value(after, "mmsr_index_up") == 1


def test_index_outage_is_a_gauge_not_an_error(app: Any, client: Any) -> None:
    from receiver.errors import IndexUnavailable

    index = app.extensions["receiver"].index

    def down() -> dict[str, int]:
        raise IndexUnavailable("index unavailable: OperationalError")

    index.backlog = down
    resp = client.get("/metrics")
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert value(text, "mmsr_index_up") == 0
    assert "mmsr_media_backlog" not in samples(text)


def test_outbound_status_callbacks_are_counted_by_status(client: Any) -> None:
    url = "http://localhost/twilio/status"
    for status in ("sent", "delivered", "delivered"):
        params = [
            ("MessageSid", "SM" + "3" * 32),
            ("MessageStatus", status),
            ("AccountSid", ACCOUNT_SID),
        ]
        assert signed_post(client, params, url).status_code in (200, 204)
    assert (
        post(client, "/twilio/status", [("MessageStatus", "failed")], "forged").status_code == 403
    )
    text = client.get("/metrics").get_data(as_text=True)
    assert value(text, "mmsr_outbound_status_callbacks_total", status="delivered") == 2
    assert value(text, "mmsr_outbound_status_callbacks_total", status="sent") == 1
    assert value(text, "mmsr_outbound_status_callbacks_total", status="failed") == 0


def test_media_pipeline_feeds_the_metrics(make_app: Any) -> None:
    """A real message with two files from a loopback media host: verdicts, kinds, bytes."""
    from tests.support import samples as files
    from tests.support.mediaserver import MediaServer

    with MediaServer() as media:
        jpeg = files.jpeg(64, 48)
        good = media.add("/a.jpg", jpeg, content_type="image/jpeg")
        liar = media.add("/b.jpg", b"%PDF-1.4 not a photo", content_type="image/jpeg")
        app = make_app(RECEIVER_MEDIA_HOSTS=media.host_port)
        client = app.test_client()
        sid = "MM" + "4" * 32
        resp = signed_post(
            client, message_params(sid, [(good, "image/jpeg"), (liar, "image/jpeg")])
        )
        assert resp.status_code == 200
        svc = app.extensions["receiver"]
        for _ in range(100):
            if svc.index.backlog().get("pending", 0) == 0:
                break
            svc.pipeline.sweep()
        text = client.get("/metrics").get_data(as_text=True)
    stored = {
        k: v
        for k, v in samples(text).items()
        if k[0] == "mmsr_media_total" and ("state", "stored") in k[1]
    }
    assert sum(stored.values()) == 1
    assert value(text, "mmsr_stored_bytes_total", kind="image") == len(jpeg)
    assert value(text, "mmsr_media_fetch_seconds_count", state="stored") == 1
    assert (
        sum(
            v
            for k, v in samples(text).items()
            if k[0] == "mmsr_media_total" and ("state", "rejected") in k[1]
        )
        == 1
    )


SETUP_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from receiver import metrics
    path = Path(sys.argv[1])
    (path / "counter_999999.db").write_bytes(b"stale")
    metrics.setup_multiprocess()
    assert not (path / "counter_999999.db").exists(), "stale files are removed"
    pid = os.fork()
    if pid == 0:
        m = metrics.Metrics()
        m.webhook("recorded")
        m.webhook("recorded")
        os._exit(0)
    os.waitpid(pid, 0)
    m = metrics.Metrics()
    m.webhook("forbidden")
    print(m.render()[0].decode())
    """
)


def test_multiprocess_mode_adds_up_every_process(tmp_path: Path) -> None:
    shared = tmp_path / "prom"
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    out = subprocess.run(
        [sys.executable, "-c", SETUP_SCRIPT, str(shared)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert value(out.stdout, "mmsr_webhooks_total", outcome="recorded") == 2
    assert value(out.stdout, "mmsr_webhooks_total", outcome="forbidden") == 1


@pytest.fixture
def multi_worker_server(tmp_path: Path, live_server: Any) -> Iterator[Any]:
    shared = tmp_path / "prom"
    shared.mkdir()
    env = base_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(shared))
    # One thread per worker, so that concurrent requests spread over the workers.
    yield live_server(env, ["--workers", "3", "--threads", "1"]), shared


def test_gunicorn_workers_report_one_total(multi_worker_server: Any) -> None:
    """Forged webhooks spread over three workers; every scrape, whichever worker answers, sees all."""
    server, shared = multi_worker_server

    def forged(i: int) -> int:
        with requests.Session() as s:  # a new connection each time: any worker may take it
            return s.post(
                server.url + "/twilio/messaging",
                data={"n": str(i)},
                headers={"X-Twilio-Signature": "forged"},
                timeout=10,
            ).status_code

    with ThreadPoolExecutor(12) as pool:
        assert set(pool.map(forged, range(60))) == {403}
    for _ in range(6):
        text = requests.get(server.url + "/metrics", timeout=10).text
        assert value(text, "mmsr_webhooks_total", outcome="forbidden") == 60
    # The counts live in the shared directory, one file per worker that counted something.
    assert list(shared.glob("counter_*.db"))
