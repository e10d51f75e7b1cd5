"""The nginx site in front of a real `serve`: Twilio's https signature survives the proxy.

Runs Debian's nginx as a subprocess on loopback ports with the site file from
deploy/nginx/receiver.conf (only addresses and certificate paths rewritten),
TLS from a throwaway CA, and `mms-receiver serve` behind it with
RECEIVER_PROXY_HOPS=1 and no RECEIVER_PUBLIC_URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from receiver.simulate import fake_sid, inbound_params
from receiver.twilio.signature import compute_signature
from tests.conftest import ACCOUNT_SID, API_TOKEN, TOKEN, LiveServer, base_env
from tests.support.mediaserver import make_tls
from tests.support.nginx import nginx_binary, start, write_config
from tests.support.services import free_port, require

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "receiver.conf"
PUBLIC_HOST = "mms.example.test"
PUBLIC_URL = f"https://{PUBLIC_HOST}/twilio/messaging"


def site_for_test(upstream_port: int, http_port: int, https_port: int, cert: str, key: str) -> str:
    """The deploy site file with loopback addresses and test certificates, nothing else."""
    text = SITE.read_text()
    replacements = {
        "server receiver:8080;": f"server 127.0.0.1:{upstream_port};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen [::]:443 ssl http2;": "",
        "/etc/nginx/certs/fullchain.pem": cert,
        "/etc/nginx/certs/privkey.pem": key,
    }
    for old, new in replacements.items():
        assert old in text, f"{SITE.name} no longer contains {old!r}; update this test"
        text = text.replace(old, new)
    return text


@dataclass
class Proxy:
    https_url: str
    http_url: str
    ca_file: str
    serve_url: str

    def post(self, params: list[tuple[str, str]], signature: str, **headers: str) -> Any:
        return requests.post(
            self.https_url + "/twilio/messaging",
            data=params,
            verify=self.ca_file,
            timeout=20,
            headers={"Host": PUBLIC_HOST, "X-Twilio-Signature": signature, **headers},
        )


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """nginx and `serve` once for the module: each test sends its own messages."""
    nginx = nginx_binary()
    require(nginx is not None, "nginx is not installed (apt-get install nginx)")
    assert nginx is not None
    tmp_path = tmp_path_factory.mktemp("nginx-site")
    env = base_env(tmp_path, RECEIVER_PROXY_HOPS="1")
    server = LiveServer(env, free_port(), ["--workers", "1"]).start()
    try:
        yield from run_nginx(nginx, tmp_path, server)
    finally:
        server.stop()


def run_nginx(nginx: str, tmp_path: Path, server: LiveServer) -> Iterator[Proxy]:
    """Run nginx with the deploy site in front of `server` until the generator is closed."""
    tls = make_tls(tmp_path / "tls", [PUBLIC_HOST, "127.0.0.1"])
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    http_port, https_port = free_port(), free_port()
    (prefix / "receiver.conf").write_text(
        site_for_test(server.port, http_port, https_port, tls.cert_file, tls.key_file)
    )
    conf = write_config(
        prefix,
        f"  access_log {prefix}/logs/access.log;\n  include {prefix}/receiver.conf;\n",
    )
    proc = start(nginx, conf, https_port)
    try:
        yield Proxy(
            f"https://127.0.0.1:{https_port}",
            f"http://127.0.0.1:{http_port}",
            tls.ca_file,
            server.url,
        )
    finally:
        proc.terminate()
        proc.wait(10)


def params_for(sid: str) -> list[tuple[str, str]]:
    return inbound_params(
        message_sid=sid,
        account_sid=ACCOUNT_SID,
        from_="+15550001111",
        to="+15550002222",
        body="through the proxy",
        media=[],
    )


def stored(proxy: Proxy, sid: str) -> int:
    return requests.get(
        f"{proxy.serve_url}/api/messages/{sid}",
        timeout=10,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ).status_code


def test_request_signed_for_the_public_https_url_passes(proxy: Proxy) -> None:
    sid = fake_sid("SM")
    params = params_for(sid)
    resp = proxy.post(params, compute_signature(TOKEN, PUBLIC_URL, params))
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/xml")
    assert "<Response" in resp.text
    assert resp.headers.get("Strict-Transport-Security")
    assert stored(proxy, sid) == 200


def test_forged_signature_is_refused(proxy: Proxy) -> None:
    sid = fake_sid("SM")
    resp = proxy.post(params_for(sid), "bm90IGEgc2lnbmF0dXJl")
    assert resp.status_code == 403
    assert stored(proxy, sid) == 404


def test_signature_for_the_internal_url_is_refused(proxy: Proxy) -> None:
    """nginx says the request came over https for the public host; nothing else matches."""
    sid = fake_sid("SM")
    params = params_for(sid)
    resp = proxy.post(
        params, compute_signature(TOKEN, proxy.serve_url + "/twilio/messaging", params)
    )
    assert resp.status_code == 403


@pytest.mark.parametrize(
    ("headers", "signed_for"),
    [
        ({"X-Forwarded-Host": "evil.example"}, "https://evil.example/twilio/messaging"),
        ({"X-Forwarded-Proto": "http"}, f"http://{PUBLIC_HOST}/twilio/messaging"),
        ({"X-Forwarded-Port": "8443"}, f"https://{PUBLIC_HOST}:8443/twilio/messaging"),
        ({"X-Forwarded-Prefix": "/x"}, f"https://{PUBLIC_HOST}/x/twilio/messaging"),
    ],
)
def test_client_forwarded_headers_are_replaced_by_the_proxy(
    proxy: Proxy, headers: dict[str, str], signed_for: str
) -> None:
    """A client cannot choose the URL the service checks by sending its own X-Forwarded-*."""
    sid = fake_sid("SM")
    params = params_for(sid)
    resp = proxy.post(params, compute_signature(TOKEN, signed_for, params), **headers)
    assert resp.status_code == 403
    honest = proxy.post(params, compute_signature(TOKEN, PUBLIC_URL, params), **headers)
    assert honest.status_code == 200


def test_plain_http_redirects_and_metrics_stay_private(proxy: Proxy) -> None:
    redirect = requests.post(
        proxy.http_url + "/twilio/messaging",
        allow_redirects=False,
        headers={"Host": PUBLIC_HOST},
        timeout=10,
    )
    assert redirect.status_code == 308
    assert redirect.headers["Location"] == PUBLIC_URL
    metrics = requests.get(
        proxy.https_url + "/metrics",
        verify=proxy.ca_file,
        timeout=10,
        headers={"Host": PUBLIC_HOST},
    )
    assert metrics.status_code == 404
    assert requests.get(proxy.serve_url + "/metrics", timeout=10).status_code == 200


def test_oversized_bodies_stop_at_the_proxy(proxy: Proxy) -> None:
    resp = proxy.post([("Body", "x" * 100_000)], "x")
    assert resp.status_code == 413


def test_the_reply_routes_take_files_through_the_proxy(proxy: Proxy) -> None:
    # A 200 KB upload passes nginx (the service answers: no such thread), while the
    # 64 KiB limit still holds everywhere else.
    resp = requests.post(
        proxy.https_url + "/api/threads/+15017122661~+15550009999/replies/preview",
        files={"files": ("photo.jpg", b"\xff" * 200_000)},
        verify=proxy.ca_file,
        timeout=20,
        headers={"Host": PUBLIC_HOST, "Authorization": f"Bearer {API_TOKEN}"},
    )
    assert resp.status_code == 404 and resp.json()["error"] == "no_such_thread", resp.text


def test_live_updates_pass_the_proxy_unbuffered(proxy: Proxy) -> None:
    with requests.get(
        proxy.https_url + "/api/stream",
        verify=proxy.ca_file,
        stream=True,
        timeout=10,
        headers={"Host": PUBLIC_HOST, "Authorization": f"Bearer {API_TOKEN}"},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lines = stream.iter_lines(decode_unicode=True)
        assert next(lines).startswith("retry: ")  # the preamble, not held in a buffer
        sid = fake_sid("SM")
        params = params_for(sid)
        started = time.monotonic()
        assert proxy.post(params, compute_signature(TOKEN, PUBLIC_URL, params)).status_code == 200
        for line in lines:
            if line.startswith("data: ") and sid in line:
                break
        assert time.monotonic() - started < 2.0
