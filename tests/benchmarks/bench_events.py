"""Events out: what one subscribed endpoint costs inbound, event latency, and backlog delivery.

    python tests/benchmarks/bench_events.py [--messages 200] [--senders 8] [--rounds 3]
                                            [--backlog 10000] [--skip-inbound]

1. Inbound throughput with one endpoint subscribed to every event type, as
   a ratio to the same server with none (the baseline, in the same run; the
   two take turns for `--rounds` rounds and the medians are compared). Each
   message carries one JPEG from a local media server, posted by `--senders`
   concurrent senders to `mms-receiver serve`. Target: at least 0.95.
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

from bench_inbound import wait_up  # noqa: E402
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


def post_all(url: str, media: MediaServer, payload: bytes, count: int, senders: int) -> float:
    """Post `count` signed one-JPEG webhooks (after a warm-up); messages per second."""
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
        time.sleep(1)
        started = time.perf_counter()
        list(pool.map(send, jobs))
        return count / (time.perf_counter() - started)


Endpoint = HookServer | NginxSink


def start_endpoint(kind: str) -> Endpoint:
    """The fast local endpoint: nginx (C, answers in microseconds) or our Python receiver."""
    if kind == "nginx":
        binary = nginx_binary()
        if binary is None:
            raise SystemExit("--endpoint nginx: nginx is not installed (apt-get install nginx)")
        return NginxSink(binary).start()
    return HookServer(lean=True).start()


def inbound_round(
    work: Path, media: MediaServer, payload: bytes, args: argparse.Namespace, endpoint: bool
) -> dict[str, float]:
    """One server run, with or without a subscribed endpoint."""
    port = free_port()
    data = work / ("with" if endpoint else "without")
    db = f"sqlite:///{data / 'receiver.db'}"
    data.mkdir(parents=True, mode=0o700)
    hooks = start_endpoint(args.endpoint) if endpoint else None
    if hooks is not None:
        index = MediaIndex.open(db)
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
    cmd = [sys.executable, "-m", "receiver", "serve", "--port", str(port)]
    cmd += ["--workers", str(args.workers), "--threads", "8"]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", proc)
        rate = post_all(
            f"http://127.0.0.1:{port}/twilio/messaging", media, payload, args.messages, args.senders
        )
        figures = {"msgs_per_s": rate}
        if hooks is not None:
            index = MediaIndex.open(db)
            deadline = time.monotonic() + 60
            while index.list_events(state="pending", limit=1) and time.monotonic() < deadline:
                time.sleep(0.2)
            created = {e.id: e.created_at for e in index.list_events(limit=1_000_000)}
            index.close()
            arrived = {r["id"]: r["at"] for r in hooks.received()}
            latencies = sorted(
                arrived[i] - at.timestamp() for i, at in created.items() if i in arrived
            )
            figures["events"] = len(created)
            figures["delivered"] = len(latencies)
            figures["p50_ms"] = statistics.median(latencies) * 1000
            figures["p99_ms"] = (
                latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            )
        return figures
    finally:
        proc.terminate()
        proc.wait(30)
        if hooks is not None:
            hooks.stop()


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
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--rounds", type=int, default=3)
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
            payload = small_jpeg()
            rounds = []
            with MediaServer() as media:
                for n in range(args.rounds):
                    work = Path(tmp) / f"round-{n}"
                    none = inbound_round(work, media, payload, args, endpoint=False)
                    one = inbound_round(work, media, payload, args, endpoint=True)
                    rounds.append((none, one))
                    print(
                        f"round {n + 1}: no endpoint {none['msgs_per_s']:.1f} msgs/s, "
                        f"one endpoint {one['msgs_per_s']:.1f} msgs/s, "
                        f"{one['delivered']:.0f}/{one['events']:.0f} events, "
                        f"p50 {one['p50_ms']:.0f} ms, p99 {one['p99_ms']:.0f} ms, "
                        f"ratio {one['msgs_per_s'] / none['msgs_per_s']:.2f}"
                    )
            none_rate = statistics.median(r[0]["msgs_per_s"] for r in rounds)
            one_rate = statistics.median(r[1]["msgs_per_s"] for r in rounds)
            # Each round's pair ran back to back: its ratio cancels the disk's and the
            # machine's drift between rounds, which the ratio of medians does not.
            paired = statistics.median(r[1]["msgs_per_s"] / r[0]["msgs_per_s"] for r in rounds)
            print(
                f"inbound ({args.messages} messages x 1 JPEG, {args.senders} senders): "
                f"median {none_rate:.1f} msgs/s without an endpoint, {one_rate:.1f} with one; "
                f"ratio of medians {one_rate / none_rate:.2f}, median of the rounds' ratios "
                f"{paired:.2f} (target >= 0.95); event latency "
                f"p50 {statistics.median(r[1]['p50_ms'] for r in rounds):.0f} ms, "
                f"p99 {max(r[1]['p99_ms'] for r in rounds):.0f} ms worst round (target < 1000 ms)"
            )
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
