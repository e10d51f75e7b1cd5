"""deploy/gunicorn.conf.py under plain gunicorn: sweeper, shared metrics, JSON logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from receiver.index import MediaIndex
from receiver.settings import Settings
from tests.conftest import ACCOUNT_SID, TOKEN, base_env
from tests.support import samples
from tests.support.mediaserver import MediaServer
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "gunicorn.conf.py"


def forbidden_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mmsr_webhooks_total" and sample.labels == {"outcome": "forbidden"}:
                return sample.value
    return 0.0


def test_plain_gunicorn_with_the_deploy_config(tmp_path: Path) -> None:
    with MediaServer() as media:
        url = media.add("/photo.jpg", samples.jpeg(80, 60), content_type="image/jpeg")
        env = base_env(tmp_path, RECEIVER_MEDIA_HOSTS=media.host_port, RECEIVER_LOG_FORMAT="json")
        # A message left pending by an earlier run: the workers' sweepers must pick it up.
        settings = Settings.from_env(env)
        index = MediaIndex.open(settings.database_url)
        sid = "MM" + "5" * 32
        index.record_message(
            {
                "sid": sid,
                "account_sid": ACCOUNT_SID,
                "direction": "inbound",
                "from_addr": "+15550001111",
                "from_channel": "sms",
                "to_addr": "+15550002222",
                "to_channel": "sms",
                "body": "",
                "num_media": 1,
                "params": "[]",
            },
            [{"idx": 0, "url": url, "declared_type": "image/jpeg"}],
        )
        port = free_port()
        full_env = {
            **os.environ,
            **env,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "2",
        }
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        err_path = tmp_path / "gunicorn.err"
        with err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(CONF), "receiver:create_app()"],
                env=full_env,
                cwd=tmp_path,
                stdout=err,
                stderr=subprocess.STDOUT,
            )
            try:
                base = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 30
                while True:
                    assert proc.poll() is None, err_path.read_text()
                    try:
                        if requests.get(base + "/healthz", timeout=1).status_code == 200:
                            break
                    except requests.RequestException:
                        pass
                    assert time.monotonic() < deadline, err_path.read_text()
                    time.sleep(0.1)

                deadline = time.monotonic() + 30
                while index.get_message(sid).media[0].state != "stored":  # type: ignore[union-attr]
                    assert time.monotonic() < deadline, "the sweeper did not process the item"
                    time.sleep(0.2)

                def forged(_: int) -> int:
                    with requests.Session() as s:
                        return s.post(
                            base + "/twilio/messaging",
                            data={"a": "b"},
                            timeout=10,
                            headers={"X-Twilio-Signature": "forged"},
                        ).status_code

                with ThreadPoolExecutor(8) as pool:
                    assert set(pool.map(forged, range(30))) == {403}
                for _ in range(5):
                    assert forbidden_count(requests.get(base + "/metrics", timeout=10).text) == 30
            finally:
                proc.terminate()
                proc.wait(30)
        index.close()
    lines = [line for line in err_path.read_text().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line, gunicorn's included, is JSON
    assert any(e["logger"] == "gunicorn.error" and "Booting worker" in e["event"] for e in events)
    access = [e for e in events if e.get("http_path") == "/twilio/messaging"]
    assert len(access) == 30 and {e["http_status"] for e in access} == {403}
    assert TOKEN not in err_path.read_text()
