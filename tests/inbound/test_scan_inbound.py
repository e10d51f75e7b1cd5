"""Malware scanning of inbound files with a real clamd: verdicts, waiting, limits, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import AUTH, base_env
from tests.support.clamd import EICAR, SIG_EICAR_BODY, Clamd, pdf_with_marker, zip_with_eicar
from tests.support.mediaserver import MediaServer
from tests.support.samples import jpeg
from tests.support.waiting import wait_for
from tests.support.webhooks import WebhookPoster, inbound_params, media_path, new_sid


def post(app: Any, media_server: MediaServer, files: list[tuple[bytes, str]]) -> dict[str, Any]:
    sid = new_sid()
    media = [
        (media_server.add(media_path(sid, i), data, content_type=ctype), ctype)
        for i, (data, ctype) in enumerate(files)
    ]
    assert (
        WebhookPoster(app.test_client()).post(inbound_params(sid, media=media)).status_code == 200
    )
    return message(app, sid)


def message(app: Any, sid: str) -> dict[str, Any]:
    resp = app.test_client().get(f"/api/messages/{sid}", headers=AUTH)
    assert resp.status_code == 200
    return resp.get_json()


def media_keys(app: Any) -> list[str]:
    return list(app.extensions["receiver"].store.iter_keys("media/"))


@pytest.fixture
def scanning_app(make_app: Any, media_server: MediaServer, clamd: Any) -> Any:
    return make_app(RECEIVER_MEDIA_HOSTS=media_server.host_port, RECEIVER_CLAMD_URL=clamd.url)


@pytest.mark.parametrize(
    ("label", "data", "declared"),
    [
        ("eicar-declared-jpeg", EICAR, "image/jpeg"),
        ("eicar-in-zip", zip_with_eicar(), "application/zip"),
        ("marker-in-pdf", pdf_with_marker(), "application/pdf"),
    ],
)
def test_malware_is_rejected_whatever_else_is_wrong_and_never_stored(
    scanning_app: Any, media_server: MediaServer, label: str, data: bytes, declared: str
) -> None:
    msg = post(scanning_app, media_server, [(data, declared), (jpeg(), "image/jpeg")])
    bad, good = msg["media"]
    assert (bad["state"], bad["reason"], bad["scan"]) == ("rejected", "malware", "malware")
    assert bad["detail"].startswith("clamd found Test.")
    assert bad["storage_key"] is None
    assert (good["state"], good["scan"]) == ("stored", "clean")
    assert media_keys(scanning_app) == [good["storage_key"]]
    resp = scanning_app.test_client().get(f"/api/media/{bad['id']}/content", headers=AUTH)
    assert resp.status_code == 404 and resp.get_json()["reason"] == "malware"


def test_eicar_signature_name_is_in_the_detail(
    scanning_app: Any, media_server: MediaServer
) -> None:
    (item,) = post(scanning_app, media_server, [(EICAR, "image/jpeg")])["media"]
    assert SIG_EICAR_BODY in item["detail"]


def test_scanning_off_gives_scan_null(make_app: Any, media_server: MediaServer) -> None:
    app = make_app(RECEIVER_MEDIA_HOSTS=media_server.host_port)
    (item,) = post(app, media_server, [(jpeg(), "image/jpeg")])["media"]
    assert item["state"] == "stored" and item["scan"] is None


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_over_stream_max(make_app: Any, media_server: MediaServer, clamd: Any, mode: str) -> None:
    app = make_app(
        RECEIVER_MEDIA_HOSTS=media_server.host_port,
        RECEIVER_CLAMD_URL=clamd.url,
        RECEIVER_CLAMD_STREAM_MAX="5000",
        RECEIVER_SCAN=mode,
    )
    data = jpeg(640, 480)
    assert len(data) > 5000
    (item,) = post(app, media_server, [(data, "image/jpeg")])["media"]
    assert item["scan"] == "unscanned"
    if mode == "required":  # never stored without a scan
        assert (item["state"], item["reason"]) == ("rejected", "too_large")
        assert "StreamMaxLength of 5,000 bytes" in item["detail"]
        assert media_keys(app) == []
    else:
        assert item["state"] == "stored" and media_keys(app) == [item["storage_key"]]


def test_unreachable_clamd_required_items_wait_then_are_stored(
    make_app: Any, media_server: MediaServer
) -> None:
    later = Clamd()  # configured, not started yet: its socket does not exist
    try:
        app = make_app(
            RECEIVER_MEDIA_HOSTS=media_server.host_port,
            RECEIVER_CLAMD_URL=later.url,
            RECEIVER_LEASE_SECONDS="40",
        )
        msg = post(app, media_server, [(jpeg(), "image/jpeg"), (EICAR, "image/jpeg")])
        assert msg["state"] == "pending"
        assert [(i["state"], i["reason"]) for i in msg["media"]] == [
            ("pending", "scan_unavailable"),
            ("pending", "scan_unavailable"),
        ]
        assert media_keys(app) == []
        pipeline = app.extensions["receiver"].pipeline
        pipeline.sweep()  # still down, and not yet due: nothing changes
        assert message(app, msg["sid"])["state"] == "pending"
        later.start()
        assert wait_for(
            lambda: pipeline.sweep() >= 0 and message(app, msg["sid"])["state"] == "complete",
            seconds=20,
            interval=0.5,
        )
        good, bad = message(app, msg["sid"])["media"]
        assert (good["state"], good["scan"]) == ("stored", "clean")
        assert (bad["state"], bad["reason"]) == ("rejected", "malware")
        assert good["attempts"] <= 2  # waiting for clamd spent no retry budget
    finally:
        later.cleanup()


def test_unreachable_clamd_optional_stores_unscanned(
    make_app: Any, media_server: MediaServer, tmp_path: Path
) -> None:
    app = make_app(
        RECEIVER_MEDIA_HOSTS=media_server.host_port,
        RECEIVER_CLAMD_URL=f"unix://{tmp_path}/absent.sock",
        RECEIVER_SCAN="optional",
    )
    (item,) = post(app, media_server, [(jpeg(), "image/jpeg")])["media"]
    assert (item["state"], item["scan"]) == ("stored", "unscanned")


def test_readyz_reports_clamd(scanning_app: Any, make_app: Any, tmp_path: Path) -> None:
    body = scanning_app.test_client().get("/readyz").get_json()
    assert body["status"] == "ready"
    assert body["clamd"]["status"] == "ok" and body["clamd"]["version"].startswith("ClamAV ")
    down = make_app(RECEIVER_CLAMD_URL=f"unix://{tmp_path}/absent.sock")
    body = down.test_client().get("/readyz").get_json()
    assert body["clamd"]["status"] == "unavailable" and "unreachable" in body["clamd"]["error"]
    assert "clamd" not in make_app().test_client().get("/readyz").get_json()


def test_check_reports_clamd_version_off_and_failure(clamd: Any, tmp_path: Path) -> None:
    from receiver.cli import main

    runner = CliRunner()
    env = base_env(tmp_path, RECEIVER_CLAMD_URL=clamd.url)
    result = runner.invoke(main, ["check"], env=env)
    assert "clamd: ok  ClamAV " in result.output, result.output
    off = runner.invoke(main, ["check"], env=base_env(tmp_path))
    assert "scanning: off (set RECEIVER_CLAMD_URL" in off.output
    down = runner.invoke(
        main, ["check"], env=base_env(tmp_path, RECEIVER_CLAMD_URL=f"unix://{tmp_path}/x.sock")
    )
    assert "clamd: FAIL" in down.output and down.exit_code == 1


def test_bad_scan_settings_name_the_fix(tmp_path: Path) -> None:
    from receiver.errors import ConfigError
    from receiver.settings import Settings

    with pytest.raises(ConfigError, match="RECEIVER_SCAN must be required or optional"):
        Settings.from_env(base_env(tmp_path, RECEIVER_SCAN="sometimes"))
    with pytest.raises(ConfigError, match="RECEIVER_CLAMD_URL"):
        Settings.from_env(base_env(tmp_path, RECEIVER_CLAMD_URL="http://clamd"))


def test_rescan_after_a_signature_update_rejects_and_removes_what_now_matches(
    make_app: Any, media_server: MediaServer, tmp_path: Path
) -> None:
    from receiver.cli import main

    marker = b"MMS-RECEIVER-LATER-SIGNATURE-5d1e"
    app = make_app(RECEIVER_MEDIA_HOSTS=media_server.host_port)  # stored before scanning
    msg = post(
        app, media_server, [(jpeg(), "image/jpeg"), (b"notes\n" + marker + b"\n", "text/plain")]
    )
    photo, notes = msg["media"]
    assert (photo["state"], notes["state"]) == ("stored", "stored")
    assert notes["scan"] is None
    updated = Clamd(extra={"Test.Later.MMS": marker})
    try:
        updated.start()
        env = base_env(tmp_path, RECEIVER_CLAMD_URL=updated.url)
        result = CliRunner().invoke(main, ["scan", "--since", "30d"], env=env)
        assert result.exit_code == 0, result.output
        assert "scanned 2: 1 clean, 1 malware" in result.output
        assert f"media {notes['id']}: Test.Later.MMS" in result.output
    finally:
        updated.cleanup()
    photo, notes = message(app, msg["sid"])["media"]
    assert (photo["state"], photo["scan"]) == ("stored", "clean")
    assert (notes["state"], notes["reason"], notes["scan"]) == ("rejected", "malware", "malware")
    assert notes["storage_key"] is None and "Test.Later.MMS" in notes["detail"]
    assert media_keys(app) == [photo["storage_key"]]
    assert (
        app.test_client().get(f"/api/media/{notes['id']}/content", headers=AUTH).status_code == 404
    )


def test_rescan_needs_clamd(tmp_path: Path) -> None:
    from receiver.cli import main

    result = CliRunner().invoke(main, ["scan"], env=base_env(tmp_path))
    assert result.exit_code != 0 and "set RECEIVER_CLAMD_URL" in result.output
    down = base_env(tmp_path, RECEIVER_CLAMD_URL=f"unix://{tmp_path}/gone.sock")
    result = CliRunner().invoke(main, ["scan"], env=down)
    assert result.exit_code == 0  # nothing stored yet: nothing to scan
    assert "scanned 0" in result.output


def test_message_page_shows_the_scan(scanning_app: Any, media_server: MediaServer) -> None:
    msg = post(scanning_app, media_server, [(jpeg(), "image/jpeg")])
    page = scanning_app.test_client().get(f"/messages/{msg['sid']}", headers=AUTH)
    assert "<dt>Malware scan</dt><dd>clean</dd>" in page.get_data(as_text=True)
