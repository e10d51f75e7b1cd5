"""`serve` as a real process: simulate end to end, dev mode, and a SIGKILL mid-download."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from lxml import etree
from PIL import Image

from tests.conftest import AUTH, base_env
from tests.support.mediaserver import MediaServer
from tests.support.webhooks import WebhookPoster, inbound_params, media_path, new_sid


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def photo(path: Path, size: tuple[int, int] = (800, 600)) -> Path:
    Image.new("RGB", size, (10, 200, 90)).save(path, "JPEG")
    return path


def test_simulate_against_a_live_dev_server(tmp_path: Path, live_server: Any) -> None:
    # No token: dev mode, whose media allowlist includes simulate's default port.
    env = {"RECEIVER_DATA_DIR": str(tmp_path / "data")}
    server = live_server(env)
    secrets_file = tmp_path / "data" / "secrets.json"
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    dev = json.loads(secrets_file.read_text())
    card = tmp_path / "ada.vcf"
    card.write_text("BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nTEL:+15550001\nEND:VCARD\n")
    result = run_cli(
        env,
        "simulate",
        "--url",
        f"{server.url}/twilio/messaging",
        "--body",
        "hello",
        "--media",
        str(photo(tmp_path / "p.jpg")),
        "--media",
        str(card),
    )
    assert result.returncode == 0, result.stderr + server.log()
    root = etree.fromstring(result.stdout.encode())
    assert root.findtext("Message/Body").startswith("Got a photo and a contact card")
    sid = next(
        line.split()[-1] for line in result.stderr.splitlines() if line.startswith("MessageSid")
    )
    got = requests.get(
        f"{server.url}/api/messages/{sid}",
        headers={"Authorization": f"Bearer {dev['api_token']}"},
        timeout=5,
    ).json()
    assert [m["state"] for m in got["media"]] == ["stored", "stored"]
    assert [m["kind"] for m in got["media"]] == ["image", "contact"]
    # The dev server only listens on loopback and says so.
    assert "Dev mode" in server.log()


def test_dev_mode_refuses_a_public_bind(tmp_path: Path) -> None:
    result = run_cli({"RECEIVER_DATA_DIR": str(tmp_path / "d")}, "serve", "--host", "0.0.0.0")
    assert result.returncode != 0
    assert "only binds to loopback" in result.stderr


def test_check_reports_problems_with_the_fix(tmp_path: Path) -> None:
    env = base_env(tmp_path, RECEIVER_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    result = run_cli(env, "check")
    assert result.returncode == 1
    assert "index: FAIL" in result.stdout
    assert "storage: ok" in result.stdout
    bad = run_cli(base_env(tmp_path, RECEIVER_PROXY_HOPS="many"), "check")
    assert bad.returncode == 1 and "RECEIVER_PROXY_HOPS must be a whole number" in bad.stdout


def test_sigkill_mid_download_then_restart_completes_without_partial_objects(
    tmp_path: Path, live_server: Any
) -> None:
    buf = io.BytesIO()
    Image.effect_noise((600, 600), 60).convert("RGB").save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    with MediaServer() as media:
        sid = new_sid()
        path = media_path(sid, 0)
        # 40 KB/s: the download is still running when the server is killed.
        media.add(path, data, content_type="image/jpeg", drip=40_000)
        env = base_env(
            tmp_path,
            RECEIVER_MEDIA_HOSTS=media.host_port,
            RECEIVER_INLINE_DEADLINE="0.5",
            RECEIVER_FETCH_DEADLINE="8",
            RECEIVER_LEASE_SECONDS="10",
        )
        server = live_server(env, ["--workers", "1"])
        params = inbound_params(sid, media=[(media.url(path), "image/jpeg")])
        url = f"{server.url}/twilio/messaging"
        signature = WebhookPoster(None).sign(url, params)
        resp = requests.post(
            url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
        )
        assert resp.status_code == 200
        time.sleep(1.0)
        server.kill()
        media_root = tmp_path / "data" / "media"
        visible = [p for p in media_root.rglob("*") if p.is_file() and not p.name.startswith(".")]
        assert visible == [], "no partial object may be visible after the crash"
        # Back up with a fast media host: the dead process's lease expires and is taken over.
        media.add(path, data, content_type="image/jpeg")
        restarted = live_server(env, ["--workers", "1"])
        deadline = time.monotonic() + 60
        item: dict[str, Any] = {}
        while time.monotonic() < deadline:
            item = requests.get(
                f"{restarted.url}/api/messages/{sid}", headers=AUTH, timeout=5
            ).json()["media"][0]
            if item["state"] == "stored":
                break
            time.sleep(0.5)
        assert item["state"] == "stored", restarted.log()
        stored = media_root / item["storage_key"]
        assert stored.read_bytes() == data
        leftovers = [p for p in media_root.rglob("*.part")]
        assert all(not p.exists() or p.name.startswith(".") for p in leftovers)


def test_fifty_concurrent_deliveries_on_postgresql_store_once(
    tmp_path: Path, live_server: Any, pg_url: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with MediaServer() as media:
        sid = new_sid()
        items = [
            (
                media.add(
                    media_path(sid, i),
                    Image.new("RGB", (40 + i, 40)).tobytes(),
                    content_type="image/x-raw",
                ),
                "application/octet-stream",
            )
            for i in range(3)
        ]
        env = base_env(tmp_path, RECEIVER_MEDIA_HOSTS=media.host_port, RECEIVER_DATABASE_URL=pg_url)
        server = live_server(env, ["--workers", "2"])
        url = f"{server.url}/twilio/messaging"
        params = inbound_params(sid, media=items)
        signature = WebhookPoster(None).sign(url, params)

        def deliver(_: int) -> int:
            resp = requests.post(
                url, data=params, headers={"X-Twilio-Signature": signature}, timeout=30
            )
            return resp.status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(deliver, range(50)))
        assert codes == [200] * 50
        got = requests.get(f"{server.url}/api/messages/{sid}", headers=AUTH, timeout=5).json()
        assert len(got["media"]) == 3
        for i in range(3):
            assert media.count(media_path(sid, i)) == 1, "each file fetched exactly once"


def test_the_banner_names_a_command_a_new_shell_can_run(tmp_path: Path) -> None:
    import shlex

    from receiver.cli import _own_command

    command = _own_command()
    # A shell opened in this directory, with only the PATH it had before.
    ran = subprocess.run(
        [*shlex.split(command), "simulate", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
    )
    assert ran.returncode == 0, (command, ran.stderr)
    assert "signed inbound webhook" in ran.stdout


def test_the_banners_simulate_command_works_as_printed(tmp_path: Path, live_server: Any) -> None:
    import shlex

    env = {"RECEIVER_DATA_DIR": str(tmp_path / "data")}
    server = live_server(env)
    lines = server.log().splitlines()
    command = lines[lines.index("Next, in another shell:") + 1].strip()
    assert "--sample" in command and server.url in command
    # The new shell is in the directory serve ran in; no files of the user's own.
    ran = subprocess.run(
        shlex.split(command),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert ran.returncode == 0, ran.stderr + server.log()
    body = etree.fromstring(ran.stdout.encode()).findtext("Message/Body")
    assert body.startswith("Got a photo and a contact card"), body
    sid = next(
        line.split()[-1] for line in ran.stderr.splitlines() if line.startswith("MessageSid")
    )
    dev = json.loads((tmp_path / "data" / "secrets.json").read_text())
    got = requests.get(
        f"{server.url}/api/messages/{sid}",
        headers={"Authorization": f"Bearer {dev['api_token']}"},
        timeout=5,
    ).json()
    assert [(m["kind"], m["state"], m["width"]) for m in got["media"]] == [
        ("image", "stored", 640),
        ("contact", "stored", None),
    ]
    assert got["media"][1]["contact"]["name"] == "Sample Contact"


def test_simulate_conversation_against_a_live_server(tmp_path: Path, live_server: Any) -> None:
    env = base_env(tmp_path)
    server = live_server(env)
    result = run_cli(
        env, "simulate", "--conversation", "--url", f"{server.url}/twilio/messaging", "--body", "hi"
    )
    assert result.returncode == 0, result.stderr + server.log()
    lines = result.stdout.splitlines()
    # 1 conversation, 4 participants, 3 messages, 2 receipts each (the other phones).
    assert len(lines) == 14 and all(line.endswith("HTTP 200") for line in lines)
    sid = next(
        line.split()[-1] for line in result.stderr.splitlines() if line.startswith("Conversation")
    )
    got = requests.get(f"{server.url}/api/conversations/{sid}", headers=AUTH, timeout=5).json()
    assert [p["address"] for p in got["participants"]] == [
        "+15005550006",
        "+15005550007",
        "+15005550008",
        None,
    ]
    assert got["participants"][3]["projected_address"] == "+15017122661"
    assert [m["body"] for m in got["messages"]] == ["hi", "Photo of the leak", "Thanks!"]
    assert [m["author"] for m in got["messages"]] == [
        "+15005550006",
        "+15005550007",
        "+15005550008",
    ]
    assert [sorted(r["address"] for r in m["receipts"]) for m in got["messages"]] == [
        ["+15005550007", "+15005550008"],
        ["+15005550006", "+15005550008"],
        ["+15005550006", "+15005550007"],
    ]
    assert {r["status"] for m in got["messages"] for r in m["receipts"]} == {"delivered"}
