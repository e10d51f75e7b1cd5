"""Events out: what one subscribed endpoint costs inbound, event latency, and backlog delivery.

    python tests/benchmarks/bench_events.py [--messages 300] [--senders 8] [--rounds 10]
                                            [--backlog 10000] [--skip-inbound]

1. Inbound throughput with one endpoint subscribed to every event type, as
   a ratio to the same server with none (the baseline, in the same run).
   Both servers run side by side and take turns: each round posts a burst of
   `--messages` to each, in alternating order, while the other is idle; each
   round's ratio is printed, then the median of the rounds' ratios. Each
   message carries one JPEG from a local media server, posted by `--senders`
   concurrent senders to `mms-receiver serve`. Target: at least 0.95. The
   servers' CPU per message (psutil over each process tree, until it is idle
   again, so deliveries count) shows what the events cost.
2. Event latency from commit (the event row's time) to receipt at the
   endpoint, p50 and p99, under that load. Target: p99 < 1 s.
3. Delivery throughput for a backlog of `--backlog` events to a fast local
   endpoint, by one dispatcher, on SQLite and on PostgreSQL (if running).

The endpoint is a separate process on loopback that answers 204 at once and records
only each webhook-id and its arrival time (it shares the machine's cores).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench_inbound import tree_cpu_seconds, wait_idle, wait_up  # noqa: E402
from nginx_sink import NginxSink, nginx_binary  # noqa: E402

from receiver.events.delivery import HttpSender, Senders, SqsSender  # noqa: E402
from receiver.events.dispatcher import Dispatcher  # noqa: E402
from receiver.events.payloads import Payloads  # noqa: E402
from receiver.events.policy import RetryPolicy  # noqa: E402
from receiver.events.signing import new_secret  # noqa: E402
from receiver.index import MediaIndex  # noqa: E402
from receiver.index.events import NewEvent, write_events  # noqa: E402
from receiver.outbound import MediaLinks  # noqa: E402
from receiver.server import default_workers  # noqa: E402
from receiver.storage import open_store  # noqa: E402
from receiver.twilio.signature import compute_signature  # noqa: E402
from tests.support.hookserver import HookServer  # noqa: E402
from tests.support.mediaserver import MediaServer  # noqa: E402
from tests.support.postgres import fresh_database, pg_available  # noqa: E402
from tests.support.services import free_port  # noqa: E402
from tests.support.webhooks import TOKEN, inbound_params, media_path, new_sid  # noqa: E402


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((320, 240), 40).convert("RGB").save(buf, "JPEG", quality=80)
    return buf.getvalue()


def post_all(
    url: str, media: MediaServer, payload: bytes, count: int, senders: int, server_pid: int
) -> tuple[float, float]:
    """Post `count` signed one-JPEG webhooks (after a warm-up).

    Returns messages per second and the server tree's CPU milliseconds per
    message, counted until the tree is idle again (so deliveries count).
    """
    jobs = []
    for _ in range(count + 2 * senders):
        sid = new_sid()
        item = media.add(media_path(sid, 0), payload, content_type="image/jpeg")
        params = inbound_params(sid, media=[(item, "image/jpeg")])
        jobs.append((params, compute_signature(TOKEN, url, params)))
    warmup, jobs = jobs[: 2 * senders], jobs[2 * senders :]
    local = threading.local()

    def send(job: tuple[list[tuple[str, str]], str]) -> None:
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        resp = session.post(url, data=job[0], headers={"X-Twilio-Signature": job[1]}, timeout=60)
        resp.raise_for_status()

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(send, warmup))
        wait_idle(server_pid)
        cpu_before = tree_cpu_seconds(server_pid)
        started = time.perf_counter()
        list(pool.map(send, jobs))
        rate = count / (time.perf_counter() - started)
    wait_idle(server_pid)
    return rate, (tree_cpu_seconds(server_pid) - cpu_before) * 1000 / count


Endpoint = HookServer | NginxSink


def start_endpoint(kind: str) -> Endpoint:
    """The fast local endpoint: nginx (C, answers in microseconds) or our Python receiver."""
    if kind == "nginx":
        binary = nginx_binary()
        if binary is None:
            raise SystemExit("--endpoint nginx: nginx is not installed (apt-get install nginx)")
        return NginxSink(binary).start()
    return HookServer(lean=True).start()


class Server:
    """One `serve` with its own SQLite index, with or without a subscribed endpoint."""

    def __init__(
        self, work: Path, media: MediaServer, args: argparse.Namespace, hooks: Endpoint | None
    ) -> None:
        self.port = free_port()
        data = work / ("with" if hooks else "without")
        data.mkdir(parents=True, mode=0o700)
        self.db = f"sqlite:///{data / 'receiver.db'}"
        if hooks is not None:
            index = MediaIndex.open(self.db)
            index.add_endpoint(hooks.url + "/in", secret=new_secret())
            index.close()
        env = {
            "RECEIVER_DATA_DIR": str(data),
            "TWILIO_AUTH_TOKEN": TOKEN,
            "RECEIVER_MEDIA_HOSTS": media.host_port,
            "RECEIVER_API_TOKEN": "bench-api-token-0123456789abcdef",
            "RECEIVER_ADMIN_PASSWORD": "bench-admin-password",
            "RECEIVER_EVENT_HOSTS": f"127.0.0.1:{hooks.port}" if hooks else "",
        }
        cmd = [sys.executable, "-m", "receiver", "serve", "--port", str(self.port)]
        cmd += ["--workers", str(args.workers), "--threads", "8"]
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_up(f"http://127.0.0.1:{self.port}/healthz", self.proc)

    def burst(
        self, media: MediaServer, payload: bytes, args: argparse.Namespace
    ) -> dict[str, float]:
        """Messages per second and server CPU ms per message of one burst."""
        rate, cpu = post_all(
            f"http://127.0.0.1:{self.port}/twilio/messaging",
            media,
            payload,
            args.messages,
            args.senders,
            self.proc.pid,
        )
        return {"msgs_per_s": rate, "cpu_ms_per_msg": cpu}

    def latencies(self, hooks: Endpoint) -> tuple[int, list[float]]:
        """Events created, and each delivered event's seconds from commit to arrival."""
        index = MediaIndex.open(self.db)
        deadline = time.monotonic() + 60
        while index.list_events(state="pending", limit=1) and time.monotonic() < deadline:
            time.sleep(0.2)
        created = {e.id: e.created_at for e in index.list_events(limit=1_000_000)}
        index.close()
        arrived = {r["id"]: r["at"] for r in hooks.received()}
        return len(created), sorted(
            arrived[i] - at.timestamp()
            for i, at in created.items()
            if i in arrived  # type: ignore[operator]
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def inbound(tmp: Path, args: argparse.Namespace) -> None:
    """Both servers run side by side, idle but for the burst being measured; bursts
    alternate between them (ABBA), so the machine's drift falls on both alike."""
    payload = small_jpeg()
    hooks = start_endpoint(args.endpoint)
    servers: list[Server] = []
    pairs: list[tuple[dict[str, float], dict[str, float]]] = []
    try:
        with MediaServer() as media:
            none = Server(tmp / "inbound", media, args, None)
            servers.append(none)
            one = Server(tmp / "inbound", media, args, hooks)
            servers.append(one)
            for n in range(args.rounds):
                if n % 2 == 0:
                    a = none.burst(media, payload, args)
                    b = one.burst(media, payload, args)
                else:
                    b = one.burst(media, payload, args)
                    a = none.burst(media, payload, args)
                pairs.append((a, b))
                print(
                    f"round {n + 1}: no endpoint {a['msgs_per_s']:.1f} msgs/s, "
                    f"one endpoint {b['msgs_per_s']:.1f} msgs/s, ratio "
                    f"{b['msgs_per_s'] / a['msgs_per_s']:.2f}; server CPU "
                    f"{a['cpu_ms_per_msg']:.1f} vs {b['cpu_ms_per_msg']:.1f} ms/msg",
                    flush=True,
                )
            events, latencies = one.latencies(hooks)
    finally:
        for server in servers:
            server.stop()
        hooks.stop()

    def median(key: str, side: int) -> float:
        return statistics.median(p[side][key] for p in pairs)

    # Each round's pair ran back to back: its ratio cancels the machine's drift
    # between rounds, which the ratio of medians does not.
    paired = statistics.median(p[1]["msgs_per_s"] / p[0]["msgs_per_s"] for p in pairs)
    cpu_none, cpu_one = median("cpu_ms_per_msg", 0), median("cpu_ms_per_msg", 1)
    print(
        f"inbound ({args.rounds} rounds of {args.messages} messages x 1 JPEG, "
        f"{args.senders} senders): median {median('msgs_per_s', 0):.1f} msgs/s without an "
        f"endpoint, {median('msgs_per_s', 1):.1f} with one; ratio of medians "
        f"{median('msgs_per_s', 1) / median('msgs_per_s', 0):.2f}, median of the rounds' "
        f"ratios {paired:.2f} (target >= 0.95)"
    )
    print(
        f"server CPU per message (median): {cpu_none:.1f} ms without, {cpu_one:.1f} ms "
        f"with (+{cpu_one - cpu_none:.2f} ms for {events / (args.rounds * args.messages):.0f} "
        f"events a message)"
    )
    print(
        f"events: {len(latencies)}/{events} delivered; latency from commit to arrival "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000:.0f} ms "
        "(target < 1000 ms)"
    )


def backlog(url: str, work: Path, count: int, kind: str) -> dict[str, float]:
    """Deliver a backlog of `count` events to a fast endpoint with one dispatcher."""
    index = MediaIndex.open(url)
    hooks = start_endpoint(kind)
    try:
        index.add_endpoint(hooks.url + "/in", secret=new_secret())
        batch = [
            NewEvent(
                "optout.changed",
                {"address": "+15550001111", "sender": "*", "opted_out": True, "keyword": "STOP"},
            )
        ] * 500
        for _ in range(count // len(batch)):
            with index.begin() as conn:
                write_events(conn, batch)
        links = MediaLinks("bench-secret-key")
        payloads = Payloads(
            open_store((work / "media").as_uri()), links.sign_media, public_url="", link_ttl=60
        )
        dispatcher = Dispatcher(
            index,
            payloads,
            Senders(HttpSender([f"127.0.0.1:{hooks.port}"]), SqsSender()),
            RetryPolicy(),
            lease_seconds=90,
        )
        started = time.perf_counter()
        delivered = 0
        while n := dispatcher.run_once():
            delivered += n
        elapsed = time.perf_counter() - started
        dispatcher.senders.close()
        return {"events": delivered, "seconds": elapsed, "per_s": delivered / elapsed}
    finally:
        hooks.stop()
        index.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--skip-inbound", action="store_true")
    parser.add_argument(
        "--endpoint",
        choices=("nginx", "python"),
        default="nginx" if nginx_binary() else "python",
        help="the endpoint process: nginx answering 204 (default when installed), or "
        "tests/support/hookserver.py in its lean mode",
    )
    args = parser.parse_args()
    print(
        f"events benchmark, {datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, "
        f"serve {args.workers} workers x 8 threads, endpoint {args.endpoint}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_inbound:
            inbound(Path(tmp), args)
        if args.backlog <= 0:
            return
        url = f"sqlite:///{Path(tmp) / 'backlog.db'}"
        fig = backlog(url, Path(tmp), args.backlog, args.endpoint)
        print(
            f"backlog SQLite: {fig['events']:.0f} events in {fig['seconds']:.1f} s "
            f"({fig['per_s']:.0f}/s)"
        )
        if pg_available():
            with fresh_database(prefix="mmsr_bench_") as pg:
                fig = backlog(pg, Path(tmp), args.backlog, args.endpoint)
            print(
                f"backlog PostgreSQL: {fig['events']:.0f} events in {fig['seconds']:.1f} s "
                f"({fig['per_s']:.0f}/s)"
            )
        else:
            print("backlog PostgreSQL: not run (no server on 127.0.0.1:5432)")


if __name__ == "__main__":
    main()
