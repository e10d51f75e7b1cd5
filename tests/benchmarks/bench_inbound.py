"""Inbound throughput and memory, with the tutorial approach as the baseline in the same run.

    python tests/benchmarks/bench_inbound.py [--messages 200] [--senders 8] [--latency 0.2]
                                             [--rounds 3] [--no-large-file]

`--latency 0` is the CPU-bound case (a media host that answers at once, like
Twilio's CDN during a burst); try it with `--messages 300 --senders 16`.

Both servers run under gunicorn with the same workers and threads on this
machine, against one local media server that adds `--latency` seconds per
file. Each of `--messages` messages carries 3 JPEGs of about 300 KB, posted by
`--senders` concurrent senders. The baseline is the approach of Twilio's
tutorial apps: each MediaUrl fetched in turn with `requests.get(url).content`
and written to disk, inside the webhook. The two servers take turns for
`--rounds` rounds (a shared 2-core machine varies by a few percent from run to
run); each round is printed, then the median round of each. For each server it
reports the CPU that its whole process tree spent per message (user + system,
from the first counted request until the tree is idle again, so work done after
the answer counts) and the tree's peak RSS. It also measures storing one 100 MB
file (cap raised) and the peak RSS growth that costs.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver.server import default_workers  # noqa: E402
from receiver.twilio.signature import compute_signature  # noqa: E402
from tests.support.mediaserver import MediaServer  # noqa: E402
from tests.support.services import free_port  # noqa: E402
from tests.support.webhooks import TOKEN, inbound_params, media_path, new_sid  # noqa: E402

BASELINE_APP = textwrap.dedent(
    """
    import os, requests
    from flask import Flask, request
    app = Flask(__name__)
    OUT = os.environ["BASELINE_DIR"]

    @app.post("/twilio/messaging")
    def sms():
        sid = request.form["MessageSid"]
        for i in range(int(request.form.get("NumMedia", 0))):
            data = requests.get(request.form[f"MediaUrl{i}"]).content
            with open(os.path.join(OUT, f"{sid}-{i}.jpg"), "wb") as fh:
                fh.write(data)
        return ('<?xml version="1.0" encoding="UTF-8"?><Response/>', 200,
                {"Content-Type": "application/xml"})
    """
)


def noisy_jpeg(target: int = 300_000) -> bytes:
    """A JPEG of about `target` bytes (noise compresses poorly, like a photo)."""
    side = 400
    while True:
        buf = io.BytesIO()
        Image.effect_noise((side, side), 40).convert("RGB").save(buf, "JPEG", quality=85)
        if buf.tell() >= target:
            return buf.getvalue()
        side += 50


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/task/{p}/children") as fh:
                pids.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return total


class RssSampler(threading.Thread):
    """Samples a process tree's RSS every 50 ms and keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.05)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants, reaped children included."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return total
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def wait_idle(pid: int, *, quiet: float = 0.5, limit: float = 60.0) -> None:
    """Wait until the tree spends less than 2% of a core over `quiet` seconds.

    Work that follows the answer (thumbnails, index writes) belongs to the
    message's cost, so CPU is read only once the tree has settled.
    """
    deadline = time.monotonic() + limit
    last = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = tree_cpu_seconds(pid)
        if now - last < 0.02 * quiet:
            return
        last = now


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def load(
    url: str, media: MediaServer, payload: bytes, messages: int, senders: int, server_pid: int
) -> dict[str, float]:
    """Post signed MMS webhooks concurrently; returns throughput, latency and CPU figures.

    Two messages per sender go first and are not counted: the figures are of
    a server whose workers have all booted, not of its start-up.
    """
    jobs = []
    for _ in range(messages + 2 * senders):
        sid = new_sid()
        items = [
            (media.add(media_path(sid, i), payload, content_type="image/jpeg"), "image/jpeg")
            for i in range(3)
        ]
        params = inbound_params(sid, media=items)
        jobs.append((params, compute_signature(TOKEN, url, params)))
    warmup, jobs = jobs[: 2 * senders], jobs[2 * senders :]
    latencies: list[float] = []
    errors = 0
    session_local = threading.local()

    def send(job: tuple[list[tuple[str, str]], str]) -> float:
        nonlocal errors
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        started = time.perf_counter()
        resp = session.post(url, data=job[0], headers={"X-Twilio-Signature": job[1]}, timeout=60)
        if resp.status_code != 200:
            errors += 1
        return time.perf_counter() - started

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(send, warmup))
        wait_idle(server_pid)
        errors = 0
        cpu_before = tree_cpu_seconds(server_pid)
        started = time.perf_counter()
        latencies = sorted(pool.map(send, jobs))
        elapsed = time.perf_counter() - started
    wait_idle(server_pid)
    cpu = tree_cpu_seconds(server_pid) - cpu_before
    return {
        "cpu_ms_per_msg": cpu * 1000 / messages,
        "msgs_per_s": messages / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
    }


def run_server(cmd: list[str], env: dict[str, str], health: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_up(health, proc)
    return proc


def bench_service(
    work: Path, media: MediaServer, payload: bytes, args: argparse.Namespace
) -> dict[str, float]:
    port = free_port()
    env = {
        "RECEIVER_DATA_DIR": str(work / "svc"),
        "TWILIO_AUTH_TOKEN": TOKEN,
        "RECEIVER_MEDIA_HOSTS": media.host_port,
        "RECEIVER_API_TOKEN": "bench-api-token-0123456789abcdef",
        "RECEIVER_ADMIN_PASSWORD": "bench-admin-password",
    }
    proc = run_server(
        [
            sys.executable,
            "-m",
            "receiver",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
        ],
        env,
        f"http://127.0.0.1:{port}/healthz",
    )
    return measure(proc, port, media, payload, args)


def measure(
    proc: subprocess.Popen[bytes],
    port: int,
    media: MediaServer,
    payload: bytes,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Load the server running as `proc` on `port`, then stop it; its figures and peak RSS."""
    sampler = RssSampler(proc.pid)
    sampler.start()
    try:
        figures = load(
            f"http://127.0.0.1:{port}/twilio/messaging",
            media,
            payload,
            args.messages,
            args.senders,
            proc.pid,
        )
    finally:
        sampler.stop.set()
        proc.terminate()
        proc.wait(20)
    figures["peak_rss_mb"] = sampler.peak / 2**20
    return figures


def bench_baseline(
    work: Path, media: MediaServer, payload: bytes, args: argparse.Namespace
) -> dict[str, float]:
    port = free_port()
    app_dir = work / "baseline"
    (app_dir / "out").mkdir(parents=True)
    (app_dir / "tutorial.py").write_text(BASELINE_APP)
    proc = run_server(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(app_dir),
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(args.workers),
            "-k",
            "gthread",
            "--threads",
            str(args.threads),
            "tutorial:app",
        ],
        {"BASELINE_DIR": str(app_dir / "out")},
        f"http://127.0.0.1:{port}/",
    )
    return measure(proc, port, media, payload, args)


LARGE_FILE_CHILD = textwrap.dedent(
    """
    import resource, sys, json
    from receiver.media.fetch import Fetcher, FetchConfig
    from receiver.storage import open_store
    url, host, dest = sys.argv[1], sys.argv[2], sys.argv[3]
    fetcher = Fetcher(FetchConfig(allowed_hosts=(host,), deadline=120))
    store = open_store("file://" + dest)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = fetcher.fetch(url, max_bytes=200 * 2**20)
    with result.file as fp:
        store.put("media/big.bin", fp, content_type="application/octet-stream", size=result.size)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"size": result.size, "growth_kb": after - before}))
    """
)


def bench_large_file(work: Path) -> dict[str, float]:
    """Store a 100 MB file through fetch + storage in a fresh process; peak RSS growth."""
    import json

    big = os.urandom(1024 * 1024) * 100
    with MediaServer() as media:
        url = media.add("/big", big, content_type="application/octet-stream")
        out = subprocess.run(
            [sys.executable, "-c", LARGE_FILE_CHILD, url, media.host_port, str(work / "big")],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    data = json.loads(out)
    return {"size_mb": data["size"] / 2**20, "rss_growth_mb": data["growth_kb"] / 1024}


def median_round(figures: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median throughput (the lower middle one of an even count)."""
    ordered = sorted(figures, key=lambda f: f["msgs_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.2)
    # The same gunicorn shape for both servers: `serve`'s default, 2 workers a core.
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-large-file", action="store_true", help="skip the 100 MB flat-memory check"
    )
    args = parser.parse_args()
    payload = noisy_jpeg()
    rounds: list[tuple[dict[str, float], dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp, MediaServer() as media:
        # Every route of this server answers after the configured latency.
        original_add = media.add
        media.add = lambda path, body=b"", **kw: original_add(
            path, body, latency=args.latency, **kw
        )  # type: ignore[method-assign]
        for n in range(args.rounds):
            work = Path(tmp) / f"round-{n}"
            rounds.append(
                (
                    bench_baseline(work, media, payload, args),
                    bench_service(work, media, payload, args),
                )
            )
        large = None if args.no_large_file else bench_large_file(Path(tmp))
    print(
        f"inbound benchmark: {args.messages} messages x 3 JPEGs of {len(payload) // 1000} KB, "
        f"{args.senders} senders, {args.latency * 1000:.0f} ms media latency, "
        f"gunicorn {args.workers} workers x {args.threads} threads, {os.cpu_count()} cores"
    )
    print(
        f"{'':28}{'msgs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/msg':>12}"
        f"{'peak RSS MB':>13}{'errors':>8}"
    )

    def row(name: str, fig: dict[str, float]) -> None:
        print(
            f"{name:28}{fig['msgs_per_s']:>10.1f}{fig['p50_ms']:>10.0f}{fig['p99_ms']:>10.0f}"
            f"{fig['cpu_ms_per_msg']:>12.1f}{fig['peak_rss_mb']:>13.0f}{fig['errors']:>8.0f}"
        )

    for n, (base_fig, ours_fig) in enumerate(rounds, 1):
        row(f"round {n}: tutorial baseline", base_fig)
        row(f"round {n}: mms-receiver serve", ours_fig)
    base = median_round([b for b, _ in rounds])
    ours = median_round([o for _, o in rounds])
    row("median: tutorial baseline", base)
    row("median: mms-receiver serve", ours)
    ratios = [o["msgs_per_s"] / b["msgs_per_s"] for b, o in rounds]
    print(
        f"throughput ratio: {ours['msgs_per_s'] / base['msgs_per_s']:.2f}x of the medians "
        f"(rounds {min(ratios):.2f}x-{max(ratios):.2f}x; target >= 2.5x); "
        f"p99 {ours['p99_ms']:.0f} ms (worst round {max(o['p99_ms'] for _, o in rounds):.0f} ms; "
        "target < 1000 ms)"
    )
    cpu_ratios = [o["cpu_ms_per_msg"] / b["cpu_ms_per_msg"] for b, o in rounds]
    print(
        f"CPU per message: {ours['cpu_ms_per_msg']:.1f} ms vs {base['cpu_ms_per_msg']:.1f} ms "
        f"({min(cpu_ratios):.2f}x-{max(cpu_ratios):.2f}x of the tutorial's per round); "
        f"peak RSS {ours['peak_rss_mb']:.0f} MB vs {base['peak_rss_mb']:.0f} MB"
    )
    if large is not None:
        print(
            f"100 MB file stored: {large['size_mb']:.0f} MB, "
            f"peak RSS growth {large['rss_growth_mb']:.1f} MB (target < 30 MB)"
        )
    print(
        f"benchmark process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB"
    )


if __name__ == "__main__":
    main()
