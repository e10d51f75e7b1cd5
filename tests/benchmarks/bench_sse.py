"""Live updates: fan-out latency to 100 and 500 open streams, and what they cost webhooks.

    python tests/benchmarks/bench_sse.py [--messages 200] [--senders 4] [--workers 2]
                                         [--rounds 2] [--postgres]

One `mms-receiver serve` (SQLite by default, PostgreSQL with --postgres when
it is running). In the same run, `--rounds` rounds of three phases each post
`--messages` signed text-only webhooks from `--senders` concurrent senders:
no stream open (the baseline), 100 streams open, 500 streams open
(`GET /api/stream`, bearer token). Taking turns spreads the machine's drift
over all three; the summary gives the median of the rounds.

Per phase: webhook answer time p50/p99, and with streams open the fan-out
latency from the webhook's answer to each stream's receipt of its
`message.received` event (p50, p99, and the p99 of the slowest stream per
message), plus the server's resident memory. The streams are read by one
selector thread in this process; it shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench_inbound import wait_up  # noqa: E402

from receiver.twilio.signature import compute_signature  # noqa: E402
from tests.support.postgres import fresh_database, pg_available  # noqa: E402
from tests.support.services import free_port  # noqa: E402
from tests.support.webhooks import TOKEN, inbound_params, new_sid  # noqa: E402

API_TOKEN = "bench-api-token-0123456789abcdef"
SID = re.compile(rb'"message_sid":"([A-Za-z0-9]+)"')


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Streams:
    """`n` open streams read by one selector thread; arrival times per message SID."""

    def __init__(self, port: int, n: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.arrivals: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.socks = []
        request = (
            f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {API_TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"stream refused: {head.splitlines()[0]!r}")
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, bytearray())
            self.socks.append(sock)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(0.2):
                now = time.monotonic()
                buf: bytearray = key.data
                try:
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if not chunk:
                    self.selector.unregister(key.fileobj)
                    continue
                # Whole lines only (a frame may be split between reads); the regular
                # expression keeps this reader's CPU, which the server shares, small.
                data = bytes(buf) + chunk
                cut = data.rfind(b"\n") + 1
                buf[:] = data[cut:]
                sids = SID.findall(data, 0, cut)
                if sids:
                    with self.lock:
                        for sid in sids:
                            self.arrivals.setdefault(sid.decode(), []).append(now)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for sock in self.socks:
            sock.close()


def post_all(url: str, messages: int, senders: int) -> tuple[list[float], dict[str, float]]:
    """Signed text webhooks; answer latencies and each SID's answer time."""
    latencies: list[float] = []
    answered: dict[str, float] = {}
    lock = threading.Lock()
    session_local = threading.local()

    def one(i: int) -> None:
        session = getattr(session_local, "s", None)
        if session is None:
            session = session_local.s = requests.Session()
        sid = new_sid("SM")
        params = inbound_params(sid, body=f"live {i}", from_=f"+1555010{i % 1000:04d}")
        sig = compute_signature(TOKEN, url, params)
        started = time.monotonic()
        resp = session.post(url, data=params, headers={"X-Twilio-Signature": sig}, timeout=30)
        done = time.monotonic()
        if resp.status_code != 200:
            raise RuntimeError(f"webhook answered {resp.status_code}")
        with lock:
            latencies.append(done - started)
            answered[sid] = done

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(one, range(messages)))
    return latencies, answered


def cpu(pid: int) -> float:
    """CPU seconds (user + system) of the server's process tree so far."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def rss(pid: int) -> float:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        total += child.memory_info().rss
    return total / 1024 / 1024


def phase(port: int, pid: int, streams: int, messages: int, senders: int) -> dict[str, float]:
    opened = Streams(port, streams) if streams else None
    try:
        time.sleep(1.0)  # every stream adopted and polled once
        memory = rss(pid)
        cpu_before = cpu(pid)
        latencies, answered = post_all(
            f"http://127.0.0.1:{port}/twilio/messaging", messages, senders
        )
        figures = {
            "streams": streams,
            "hook_p50_ms": pct(latencies, 0.5) * 1000,
            "hook_p99_ms": pct(latencies, 0.99) * 1000,
            "rss_mb": memory,
        }
        if opened is not None:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with opened.lock:
                    done = all(len(opened.arrivals.get(s, [])) >= streams for s in answered)
                if done:
                    break
                time.sleep(0.1)
            with opened.lock:
                lags = [t - answered[s] for s in answered for t in opened.arrivals.get(s, [])]
                slowest = [
                    max(opened.arrivals[s]) - answered[s]
                    for s in answered
                    if opened.arrivals.get(s)
                ]
                missing = sum(streams - len(opened.arrivals.get(s, [])) for s in answered)
            figures.update(
                fanout_p50_ms=pct(lags, 0.5) * 1000,
                fanout_p99_ms=pct(lags, 0.99) * 1000,
                last_stream_p99_ms=pct(slowest, 0.99) * 1000,
                missing=missing,
            )
        # The server's CPU per webhook, fan-out to every stream included.
        figures["cpu_ms"] = (cpu(pid) - cpu_before) / messages * 1000
        return figures
    finally:
        if opened is not None:
            opened.close()


def run(database_url: str | None, args: argparse.Namespace) -> list[dict[str, float]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "RECEIVER_DATA_DIR": str(Path(tmp) / "data"),
            "TWILIO_AUTH_TOKEN": TOKEN,
            "RECEIVER_API_TOKEN": API_TOKEN,
            "RECEIVER_ADMIN_PASSWORD": "bench-admin-password",
            "RECEIVER_SECRET_KEY": "bench-secret-key",
            "RECEIVER_STREAM_MAX": "600",
        }
        if database_url:
            env["RECEIVER_DATABASE_URL"] = database_url
        cmd = [
            sys.executable, "-m", "receiver", "serve", "--port", str(port),
            "--workers", str(args.workers),
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_up(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
            post_all(f"http://127.0.0.1:{port}/twilio/messaging", 20, args.senders)  # warm-up
            return [
                phase(port, proc.pid, n, args.messages, args.senders)
                for _ in range(args.rounds)
                for n in (0, 100, 500)
            ]
        finally:
            proc.terminate()
            proc.wait(30)


def report(name: str, rows: list[dict[str, float]]) -> None:
    print(f"\n{name} (load average {os.getloadavg()[0]:.1f})")
    print(
        "streams  hook p50  hook p99  fan-out p50  fan-out p99  last stream p99  missing"
        "  RSS MB  server CPU/msg"
    )
    for r in rows:
        fan = (
            f"{r['fanout_p50_ms']:9.0f}ms  {r['fanout_p99_ms']:9.0f}ms  "
            f"{r['last_stream_p99_ms']:13.0f}ms  {r['missing']:7.0f}"
            if "fanout_p50_ms" in r
            else f"{'-':>11}  {'-':>11}  {'-':>15}  {'-':>7}"
        )
        print(
            f"{r['streams']:7.0f}  {r['hook_p50_ms']:6.1f}ms  {r['hook_p99_ms']:6.1f}ms  "
            f"{fan}  {r['rss_mb']:6.0f}  {r['cpu_ms']:8.1f}ms"
        )
    print("median of the rounds:")
    for n in (0, 100, 500):
        mine = [r for r in rows if r["streams"] == n]
        line = (
            f"  {n:3d} streams: hook p99 {median(mine, 'hook_p99_ms'):.0f} ms, "
            f"server CPU {median(mine, 'cpu_ms'):.1f} ms/msg"
        )
        if n:
            line += (
                f", fan-out p50 {median(mine, 'fanout_p50_ms'):.0f} ms"
                f", p99 {median(mine, 'fanout_p99_ms'):.0f} ms"
            )
        print(line)


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    report("SQLite", run(None, args))
    if args.postgres:
        if not pg_available():
            print("PostgreSQL is not running: skipped")
            return
        with fresh_database() as url:
            report("PostgreSQL", run(url, args))


if __name__ == "__main__":
    main()
