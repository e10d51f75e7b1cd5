"""Security checks: forged signatures, SSRF targets, anonymous access to every route."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from receiver.errors import FetchError, SignatureError
from receiver.twilio.signature import SignatureVerifier, compute_signature

TOKEN = "security-auth-token-0123456789ab"
URL = "https://mms.example.com/twilio/messaging"


@dataclass
class Check:
    """Attempts made and how many got through."""

    name: str
    attempts: int = 0
    accepted: int = 0
    details: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.details) < 10:
            self.details.append(text)


def base_params(n: int) -> list[tuple[str, str]]:
    sid = "MM" + hashlib.sha256(str(n).encode()).hexdigest()[:32]
    return [
        ("MessageSid", sid),
        ("AccountSid", "AC" + "c" * 32),
        ("From", "+15550001111"),
        ("To", "+15550002222"),
        ("Body", f"hello {n}"),
        ("NumMedia", "1"),
        ("MediaUrl0", f"https://api.twilio.com/2010-04-01/Accounts/AC/Messages/{sid}/Media/ME1"),
        ("MediaContentType0", "image/jpeg"),
    ]


def forgeries(count: int, seed: int = 11) -> list[tuple[str, list[tuple[str, str]], str]]:
    """(url, params, signature) triples that must all be refused: signatures that were
    mutated, made with another token, or made for other content or another URL."""
    rng = random.Random(seed)
    out: list[tuple[str, list[tuple[str, str]], str]] = []
    wrong_tokens = ["", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "other-account-token-000000000000"]
    for n in range(count):
        params = base_params(n)
        good = compute_signature(TOKEN, URL, params)
        kind = n % 8
        url = URL
        if kind == 0:  # flip bits of the raw MAC
            raw = bytearray(base64.b64decode(good))
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            signature = base64.b64encode(bytes(raw)).decode()
        elif kind == 1:  # truncate, extend, change case, or garble the text
            signature = rng.choice(
                [
                    good[:-1],
                    good + "A",
                    good.swapcase(),
                    good[::-1],
                    good[:10],
                    "",
                    " " + good,
                    good.replace("=", ""),
                ]
            )
            if signature == good:
                signature = good[:-2]
        elif kind == 2:  # another token
            signature = compute_signature(rng.choice(wrong_tokens) or "z", URL, params)
        elif kind == 3:  # a value changed after signing
            i = rng.randrange(len(params))
            name, value = params[i]
            params = [
                *params[:i],
                (name, value + rng.choice(["x", " ", "0", "\u00e9"])),
                *params[i + 1 :],
            ]
            signature = good
        elif kind == 4:  # a parameter added or removed after signing
            if rng.random() < 0.5:
                params = [*params, ("MediaUrl1", "http://169.254.169.254/latest/meta-data/")]
            else:
                params = params[:-1]
            signature = good
        elif kind == 5:  # signed for another URL: scheme, host, path or query
            other = rng.choice(
                [
                    "http://mms.example.com/twilio/messaging",
                    "https://evil.example.com/twilio/messaging",
                    "https://mms.example.com/twilio/status",
                    "https://mms.example.com/twilio/messaging?x=1",
                    "https://mms.example.com:8443/twilio/messaging",
                ]
            )
            signature = compute_signature(TOKEN, other, params)
        elif kind == 6:  # a valid signature of another message (replayed onto this one)
            signature = compute_signature(TOKEN, URL, base_params(n + 1))
        else:  # SHA-256 instead of SHA-1, or hex instead of base64
            import hmac

            message = (URL + "".join(k + v for k, v in sorted(params))).encode()
            if rng.random() < 0.5:
                signature = base64.b64encode(
                    hmac.new(TOKEN.encode(), message, hashlib.sha256).digest()
                ).decode()
            else:
                signature = hmac.new(TOKEN.encode(), message, hashlib.sha1).hexdigest()
        out.append((url, params, signature))
    return out


def check_forgeries(count: int) -> Check:
    """Every forgery through the verifier: none may verify."""
    verifier = SignatureVerifier([TOKEN])
    check = Check("forged or mutated signatures")
    for url, params, signature in forgeries(count):
        check.attempts += 1
        try:
            verifier.verify(url, params, signature)
        except SignatureError:
            continue
        check.accepted += 1
        check.note(f"accepted: {signature!r} for {params!r}")
    # The same verifier accepts the genuine article, so refusals are not a broken verifier.
    genuine = base_params(0)
    verifier.verify(URL, genuine, compute_signature(TOKEN, URL, genuine))
    return check


def check_forgeries_over_http(serve_url: str, token: str, count: int) -> Check:
    """Forgeries posted to a running service: every one 403 and nothing recorded."""
    check = Check("forged signatures over HTTP")
    url = serve_url + "/twilio/messaging"
    with requests.Session() as session:
        for n, (_, params, _sig) in enumerate(forgeries(count, seed=5)):
            signed = compute_signature(token, url, params)
            signature = signed[:-2] + ("AA" if not signed.endswith("AA") else "BB")
            if n % 2:
                signature = compute_signature(token + "x", url, params)
            check.attempts += 1
            resp = session.post(
                url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
            )
            if resp.status_code != 403:
                check.accepted += 1
                check.note(f"HTTP {resp.status_code} for a forged request")
    return check


# -- SSRF ------------------------------------------------------------------------------

DIRECT_TARGETS = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://127.1/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[::ffff:127.0.0.1]/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/_HELO",
    "ftp://media.example.com/x",
    "dict://127.0.0.1:11211/",
    "http://media.example.com@127.0.0.1/",
    "http://127.0.0.1#@media.example.com/",
    "http://media.example.com.127.0.0.1.nip.io/",
    "https://api.twilio.com.evil.example/x",
]
RESOLVED_TO = [
    "127.0.0.1",
    "10.1.2.3",
    "172.20.0.5",
    "192.168.0.10",
    "169.254.169.254",
    "169.254.170.2",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "fd00::1",
    "fe80::1",
    "64:ff9b::a00:1",
    "fd00:ec2::254",
]


def check_ssrf(tmp: Path) -> Check:
    """Every SSRF target refused as blocked_host, and the internal server never reached."""
    from receiver.media.fetch import FetchConfig, Fetcher, system_resolver
    from tests.support.mediaserver import MediaServer

    check = Check("SSRF targets")
    with MediaServer() as public, MediaServer() as internal:
        internal.add("/secret", b"internal data", content_type="text/plain")
        allowed = ("media.example.com", public.host_port)
        resolved: dict[str, str] = {}

        def resolver(host: str, port: int) -> list[str]:
            # media.example.com resolves where the test says; other names as usual.
            if host in resolved:
                return [resolved[host]]
            return system_resolver(host, port)

        def attempt(url: str, fetcher: Fetcher) -> None:
            check.attempts += 1
            try:
                result = fetcher.fetch(url, max_bytes=1024 * 1024)
            except FetchError as exc:
                if exc.reason != "blocked_host" and not re.match(r"^(file|gopher|ftp|dict)", url):
                    check.accepted += 1
                    check.note(f"{url}: refused only by {exc.reason} ({exc})")
                return
            result.close()
            check.accepted += 1
            check.note(f"{url}: fetched")

        config = FetchConfig(
            allowed_hosts=allowed, connect_timeout=1.0, read_timeout=2.0, deadline=5.0, attempts=1
        )
        with Fetcher(config, resolver=resolver) as fetcher:
            for url in DIRECT_TARGETS:
                attempt(url, fetcher)
            for address in RESOLVED_TO:
                resolved["media.example.com"] = address
                attempt("http://media.example.com/photo.jpg", fetcher)
                attempt(f"https://media.example.com:{internal.port}/secret", fetcher)
            resolved["media.example.com"] = "10.0.0.7"
            hops = [
                f"http://127.0.0.1:{internal.port}/secret",
                f"http://localhost:{internal.port}/secret",
                f"http://[::1]:{internal.port}/secret",
                "http://169.254.169.254/latest/meta-data/",
                "http://10.0.0.1/",
                "http://media.example.com/x",
                "file:///etc/passwd",
                f"http://2130706433:{internal.port}/secret",
            ]
            for n, hop in enumerate(hops):
                path = f"/redirect{n}"
                public.redirect(path, hop)
                attempt(public.url(path), fetcher)
                # ... and the same after a first, harmless hop on the allowed host.
                public.redirect(f"/twice{n}", path)
                attempt(public.url(f"/twice{n}"), fetcher)
        if internal.count():
            check.accepted += internal.count()
            check.note(f"the internal server was reached {internal.count()} time(s)")
    return check


# -- routes ------------------------------------------------------------------------------

PUBLIC_ROUTES = {"/healthz", "/readyz", "/metrics", "/login", "/logout", "/static/app.css"}


def check_routes(tmp: Path) -> Check:
    """Every UI and API route, each method, anonymously: refused, and nothing changes."""
    from receiver import create_app
    from receiver.settings import Settings

    settings = Settings.from_env(
        {
            "RECEIVER_DATA_DIR": str(tmp / "routes"),
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_ACCOUNT_SID": "AC" + "c" * 32,
            "RECEIVER_API_TOKEN": "route-api-token-0123456789abcdef",
            "RECEIVER_ADMIN_PASSWORD": "route-admin-password",
            "RECEIVER_SECRET_KEY": "k" * 32,
        }
    )
    app = create_app(settings)
    services = app.extensions["receiver"]
    sid = "MM" + "d" * 32
    services.index.record_message(
        {
            "sid": sid,
            "account_sid": "AC" + "c" * 32,
            "direction": "inbound",
            "from_addr": "+15550001111",
            "from_channel": "sms",
            "to_addr": "+15550002222",
            "to_channel": "sms",
            "body": "secret text",
            "num_media": 1,
            "params": "[]",
        },
        [{"idx": 0, "url": "https://api.twilio.com/x", "declared_type": "image/jpeg"}],
    )
    media_id = services.index.media_of(sid)[0].id
    values = {
        "sid": sid,
        "media_id": str(media_id),
        "ref": "1",
        "address": "+15550001111",
        "token": "AAAAAAAAAAAAAAAAAAAAAAAA.BBBBBBBB",
    }
    check = Check("anonymous UI/API requests")
    client = app.test_client()
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC_ROUTES:
            continue
        path = rule.rule
        for name in rule.arguments:
            path = re.sub(rf"<(?:[a-z]+:)?{name}>", values.get(name, "1"), path)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            check.attempts += 1
            resp = client.open(
                path, method=method, follow_redirects=True, data={"To": "+15550003333", "Body": "x"}
            )
            final = resp.request.path
            refused = resp.status_code in (400, 401, 403, 404, 405) or final == "/login"
            leaked = b"secret text" in resp.data
            if not refused or leaked:
                check.accepted += 1
                check.note(f"{method} {path}: {resp.status_code} at {final}")
    if services.index.get_message(sid) is None:
        check.accepted += 1
        check.note("an anonymous request deleted a message")
    services.close()
    return check


# -- slow clients ----------------------------------------------------------------------------


@dataclass
class SlowClientResult:
    """What 8 signed senders and /healthz saw while slow clients held connections open."""

    slow_opened: int = 0
    slow_closed_in_time: int = 0
    slowest_close: float = 0.0
    healthz: list[float] = field(default_factory=list)
    healthz_failed: int = 0
    webhooks: int = 0
    webhooks_ok_in_time: int = 0
    slowest_webhook: float = 0.0
    seconds: float = 0.0

    @property
    def healthz_p99(self) -> float:
        if not self.healthz:
            return float("inf")
        ordered = sorted(self.healthz)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _slow_openings(port: int, body: int, header: int) -> list[tuple[socket.socket, float, bytes]]:
    """Connections that start a request and then send one byte (or line) a second."""
    out = []
    for n in range(body + header):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        if n < body:
            start = (
                b"POST /twilio/messaging HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 60000\r\n\r\n"
            )
            drip = b"a"
        else:
            start = b"GET /healthz HTTP/1.1\r\n"
            drip = b"X-Slow: 1\r\n"
        sock.send(start)
        out.append((sock, time.monotonic(), drip))
    return out


def check_slow_clients(
    tmp: Path,
    *,
    slow_body: int = 200,
    slow_header: int = 200,
    senders: int = 8,
    limit: float = 30.0,
    workers: int = 4,
) -> SlowClientResult:
    """Slow-body and slow-header clients next to signed webhooks and /healthz probes.

    Loopback only, bounded: every socket is closed by `limit` + 5 s whatever happens.
    """
    from tests.conftest import LiveServer, base_env, free_port
    from tests.support.webhooks import TOKEN as HOOK_TOKEN
    from tests.support.webhooks import WebhookPoster, inbound_params

    result = SlowClientResult()
    server = LiveServer(base_env(tmp / "slow"), free_port(), ["--workers", str(workers)])
    server.start()
    stop = threading.Event()
    lock = threading.Lock()

    def send_webhooks() -> None:
        session = requests.Session()
        poster = WebhookPoster(session, token=HOOK_TOKEN, base=server.url)
        while not stop.is_set():
            params = inbound_params(body="slow-client check")
            url = server.url + "/twilio/messaging"
            started = time.monotonic()
            try:
                resp = session.post(
                    url,
                    data=params,
                    headers={"X-Twilio-Signature": poster.sign(url, params)},
                    timeout=10,
                )
                ok = resp.status_code == 200
            except requests.RequestException:
                ok = False
            took = time.monotonic() - started
            with lock:
                result.webhooks += 1
                result.slowest_webhook = max(result.slowest_webhook, took)
                result.webhooks_ok_in_time += ok and took < 2.0

    def probe() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                ok = requests.get(server.url + "/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                ok = False
            took = time.monotonic() - started
            with lock:
                result.healthz.append(took)
                result.healthz_failed += not ok
            stop.wait(0.05)

    began = time.monotonic()
    threads = [threading.Thread(target=send_webhooks, daemon=True) for _ in range(senders)]
    threads.append(threading.Thread(target=probe, daemon=True))
    try:
        slow = _slow_openings(server.port, slow_body, slow_header)
        result.slow_opened = len(slow)
        for thread in threads:
            thread.start()
        open_ = {sock: (opened, drip) for sock, opened, drip in slow}
        while open_ and time.monotonic() - began < limit + 5:
            for sock, (opened, drip) in list(open_.items()):
                closed = False
                try:
                    data = sock.recv(4096)
                    closed = data == b"" or data.startswith(b"HTTP/1.1 408")
                except BlockingIOError:
                    try:
                        sock.send(drip)
                    except OSError:
                        closed = True
                except OSError:
                    closed = True
                if closed:
                    took = time.monotonic() - opened
                    result.slowest_close = max(result.slowest_close, took)
                    result.slow_closed_in_time += took <= limit
                    sock.close()
                    del open_[sock]
            time.sleep(1.0)
        # The senders keep going a little after the last slow client left.
        stop.wait(max(0.0, 3.0 - (time.monotonic() - began)))
    finally:
        stop.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join(15)
        for sock, _, _ in locals().get("slow", []):
            sock.close()
        server.stop()
    result.seconds = time.monotonic() - began
    return result


# -- file modes ------------------------------------------------------------------------------


def private_mode_problems(root: Path) -> tuple[int, list[str]]:
    """(entries checked, entries readable by group or others) under `root`."""
    checked, problems = 0, []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        checked += 1
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            problems.append(f"{path.relative_to(root.parent)} is {mode:o}")
    return checked, problems


def check_file_modes(tmp: Path) -> Check:
    """Every file and directory in the data directory after `serve`, `worker` and `purge`."""
    import subprocess
    import sys

    from tests.conftest import LiveServer, base_env, free_port
    from tests.support import samples
    from tests.support.mediaserver import MediaServer
    from tests.support.webhooks import TOKEN as HOOK_TOKEN
    from tests.support.webhooks import WebhookPoster, inbound_params

    check = Check("file modes")
    media = MediaServer().start()
    media.add("/photo.jpg", samples.jpeg(64, 48), content_type="image/jpeg")
    env = base_env(tmp / "modes", RECEIVER_MEDIA_HOSTS=media.host_port)
    data = Path(env["RECEIVER_DATA_DIR"])
    server = LiveServer(env, free_port(), ["--workers", "2"]).start()
    try:
        session = requests.Session()
        poster = WebhookPoster(session, token=HOOK_TOKEN, base=server.url)
        for n in range(5):
            params = inbound_params(
                body=f"mode check {n}", media=[(media.url("/photo.jpg"), "image/jpeg")]
            )
            url = server.url + "/twilio/messaging"
            session.post(
                url, data=params, headers={"X-Twilio-Signature": poster.sign(url, params)}
            ).raise_for_status()
    finally:
        server.stop()
        media.stop()
    time.sleep(1.1)  # so that `purge --older-than 1s` has every message to delete
    for stage, args in (
        ("serve", None),
        ("worker", ["worker", "--once"]),
        ("purge", ["purge", "--older-than", "1s", "--execute"]),
    ):
        if args is not None:
            subprocess.run(
                [sys.executable, "-m", "receiver", *args],
                env={**os.environ, **env},
                check=True,
                capture_output=True,
                timeout=120,
            )
        checked, problems = private_mode_problems(data)
        check.attempts += checked
        check.accepted += len(problems)
        for problem in problems:
            check.note(f"after {stage}: {problem}")
    return check


# -- sessions and login limiting ----------------------------------------------------------------


def _csrf(session: requests.Session, url: str, headers: dict[str, str]) -> str:
    page = session.get(url + "/login", headers=headers, timeout=10).text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, "no CSRF token on the login page"
    return found.group(1)


def _login(session: requests.Session, url: str, password: str, address: str) -> int:
    headers = {"X-Forwarded-For": address}
    token = _csrf(session, url, headers)
    resp = session.post(
        url + "/login",
        data={"password": password, "csrf_token": token},
        headers=headers,
        allow_redirects=False,
        timeout=10,
    )
    return resp.status_code


@dataclass
class SessionChecks:
    """Replays of ended sessions and the login limit, against `serve` with several workers."""

    logout_replay: Check = field(default_factory=lambda: Check("logout replay"))
    revoke_all: Check = field(default_factory=lambda: Check("revoke-all replay"))
    expiry: Check = field(default_factory=lambda: Check("idle and absolute expiry"))
    checked_per_address: dict[str, int] = field(default_factory=dict)
    operator_status: int = 0


def check_sessions(tmp: Path, *, workers: int = 4) -> SessionChecks:
    """Logout replay, revoke-all and the login limit over HTTP; expiry with a set clock."""
    import subprocess
    import sys

    from tests.conftest import ADMIN_PASSWORD, LiveServer, base_env, free_port

    out = SessionChecks()
    env = base_env(tmp / "sessions", RECEIVER_PROXY_HOPS="1")
    server = LiveServer(env, free_port(), ["--workers", str(workers)]).start()
    url = server.url
    try:
        # Logout replay: the copied cookie opens neither the pages nor the API.
        browser = requests.Session()
        _login(browser, url, ADMIN_PASSWORD, "198.51.100.1")
        copied = dict(browser.cookies)
        token = re.search(
            r'name="csrf_token" value="([^"]+)"', browser.get(url + "/messages", timeout=10).text
        )
        assert token is not None
        browser.post(url + "/logout", data={"csrf_token": token.group(1)}, timeout=10)
        for path, refused in (("/messages", 302), ("/api/messages", 401)):
            out.logout_replay.attempts += 1
            resp = requests.get(url + path, cookies=copied, allow_redirects=False, timeout=10)
            if resp.status_code != refused or (
                refused == 302 and not resp.headers.get("Location", "").startswith("/login")
            ):
                out.logout_replay.accepted += 1
                out.logout_replay.note(f"{path} after logout: {resp.status_code}")
        # Revoke-all from the command line ends sessions held by every worker.
        cookies = []
        for n in range(8):
            other = requests.Session()
            _login(other, url, ADMIN_PASSWORD, f"198.51.100.{10 + n}")
            cookies.append(dict(other.cookies))
        subprocess.run(
            [sys.executable, "-m", "receiver", "sessions", "revoke", "--all"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            timeout=60,
        )
        for jar in cookies:
            out.revoke_all.attempts += 1
            resp = requests.get(url + "/messages", cookies=jar, allow_redirects=False, timeout=10)
            if resp.status_code != 302:
                out.revoke_all.accepted += 1
                out.revoke_all.note(f"a revoked cookie answered {resp.status_code}")
        # 100 wrong passwords from 4 addresses at once, spread over the workers.
        addresses = [f"203.0.113.{n}" for n in range(1, 5)]
        counts = {a: 0 for a in addresses}
        lock = threading.Lock()

        def attack(address: str) -> None:
            session = requests.Session()
            headers = {"X-Forwarded-For": address}
            token = _csrf(session, url, headers)
            for _ in range(25):
                status = session.post(
                    url + "/login",
                    data={"password": "wrong-password", "csrf_token": token},
                    headers=headers,
                    allow_redirects=False,
                    timeout=10,
                ).status_code
                with lock:
                    counts[address] += status == 401  # 401: the password was checked

        threads = [threading.Thread(target=attack, args=(a,)) for a in addresses]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        out.checked_per_address = counts
        out.operator_status = _login(requests.Session(), url, ADMIN_PASSWORD, "203.0.113.99")
    finally:
        server.stop()
    out.expiry = check_expiry(tmp)
    return out


def check_expiry(tmp: Path) -> Check:
    """Idle (30 min) and absolute (12 h) expiry, with the session store's clock set by hand."""
    from receiver import create_app
    from receiver.index.sessions import IDLE_SECONDS, LIFETIME_SECONDS
    from receiver.settings import Settings
    from tests.conftest import ADMIN_PASSWORD, base_env

    check = Check("idle and absolute expiry")
    app = create_app(Settings.from_env(base_env(tmp / "expiry")))
    now = [1_000_000.0]
    app.extensions["receiver"].sessions.clock = lambda: now[0]
    client = app.test_client()

    def login() -> None:
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        client.post("/login", data={"password": ADMIN_PASSWORD, "csrf_token": token.group(1)})

    def expect(status: int, what: str) -> None:
        check.attempts += 1
        got = client.get("/messages").status_code
        if got != status:
            check.accepted += 1
            check.note(f"{what}: {got}, expected {status}")

    login()
    now[0] += IDLE_SECONDS - 1
    expect(200, "active within the idle timeout")
    now[0] += IDLE_SECONDS
    expect(302, "idle past the timeout")
    login()
    started = now[0]
    while now[0] + IDLE_SECONDS / 2 < started + LIFETIME_SECONDS:
        now[0] += IDLE_SECONDS / 2
        expect(200, "active, younger than 12 h")
    now[0] = started + LIFETIME_SECONDS
    expect(302, "active but 12 h old")
    app.extensions["receiver"].close()
    return check


def check_hostile_bodies(tmp: Path, count: int = 10_000, seed: int = 7) -> Check:
    """`count` hostile JSON and form bodies on webhook routes: no answer may be a 5xx."""
    import logging

    from tests.reliability.fuzz import HostilePoster, hostile_body

    check = Check("hostile webhook bodies")
    rng = random.Random(seed)
    poster = HostilePoster(tmp / "hostile")
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # 10,000 refusals would flood the log
    try:
        for _ in range(count):
            content_type, body = hostile_body(rng)
            check.attempts += 1
            status = poster.post(rng, content_type, body)
            if status >= 500:
                check.accepted += 1
                check.note(f"{status} for {content_type!r} {body[:60]!r} ({len(body)} bytes)")
    finally:
        logging.disable(previous)
        poster.close()
    return check
