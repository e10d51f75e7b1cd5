"""A real deployment on one machine: `serve` and `worker` processes sharing PostgreSQL and S3.

Used by the scale-out test and the reliability suite. Everything is a real
process or server on loopback: `python -m receiver serve` / `worker`
subprocesses (each in its own session, so SIGKILL takes a whole gunicorn
tree down like a container kill), moto's S3 server, the media server of
`tests.support.mediaserver`, and PostgreSQL (the machine's, or a private
instance this module starts so that it can be restarted).

The load generator plays Twilio: it signs each webhook for the server it
posts to, delivers some messages twice (to both servers at once), and, like
Twilio's retry or fallback URL, tries the other server when a delivery gets no
answer or a 5xx. `verify()` then checks the end state against the plan.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from receiver.simulate import SimulatedMedia, inbound_params
from receiver.twilio.signature import compute_signature
from tests.support import samples
from tests.support.mediaserver import MediaServer, Reply
from tests.support.services import free_port, wait_healthy

TOKEN = "reliability-auth-token-0123456789"
ACCOUNT_SID = "AC" + "7" * 32
API_TOKEN = "reliability-api-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


# -- payloads -----------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """Bytes a media URL serves, with the type it declares."""

    data: bytes
    content_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def payloads() -> list[Payload]:
    """A small set of real files of the kinds MMS carries (built once, reused)."""
    return [
        Payload(samples.jpeg(64, 48, seed=1), "image/jpeg"),
        Payload(samples.jpeg(120, 90, seed=2), "image/jpeg"),
        Payload(samples.png(40, 40), "image/png"),
        Payload(samples.gif_animated(), "image/gif"),
        Payload(samples.vcard(), "text/vcard"),
    ]


@dataclass
class Item:
    """One planned attachment."""

    path: str
    url: str
    payload: Payload


@dataclass
class Planned:
    """One planned message (and whether it is delivered twice)."""

    sid: str
    items: list[Item]
    duplicate: bool
    body: str = ""

    def params(self) -> list[tuple[str, str]]:
        return inbound_params(
            message_sid=self.sid,
            account_sid=ACCOUNT_SID,
            from_="+15550001111",
            to="+15550002222",
            body=self.body,
            media=[SimulatedMedia(i.url, i.payload.content_type) for i in self.items],
        )


def plan_messages(
    media: MediaServer,
    count: int,
    *,
    duplicate_every: int = 5,
    max_media: int = 3,
    min_media: int = 0,
    seed: int = 7,
    faults: bool = False,
) -> list[Planned]:
    """`count` messages with 0-`max_media` attachments each on `media`.

    With `faults`, some media routes first answer 503, reset the connection
    mid-body or answer slowly, then serve the file.
    """
    rng = random.Random(seed)
    files = payloads()
    planned: list[Planned] = []
    for n in range(count):
        sid = "MM" + hashlib.sha256(f"{seed}-{n}".encode()).hexdigest()[:32]
        items = []
        for i in range(rng.randint(max(min_media, 1 if n % 4 else 0), max_media)):
            payload = files[rng.randrange(len(files))]
            path = f"/media/{sid}/{i}"
            replies: list[Reply] = []
            if faults:
                roll = rng.random()
                if roll < 0.15:
                    replies.append(Reply(status=503, body=b"busy", content_type="text/plain"))
                elif roll < 0.30:
                    replies.append(
                        Reply(
                            body=payload.data,
                            content_type=payload.content_type,
                            reset_after=max(1, len(payload.data) // 3),
                        )
                    )
                elif roll < 0.40:
                    replies.append(
                        Reply(
                            body=payload.data,
                            content_type=payload.content_type,
                            latency=rng.uniform(0.5, 2.0),
                        )
                    )
            replies.append(Reply(body=payload.data, content_type=payload.content_type))
            url = media.add_replies(path, *replies)
            items.append(Item(path, url, payload))
        planned.append(Planned(sid, items, duplicate=n % duplicate_every == 0, body=f"msg {n}"))
    return planned


# -- processes -------------------------------------------------------------------------


class Proc:
    """A `python -m receiver ...` subprocess in its own session (killable as a tree)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "receiver", *self.args],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=ROOT,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group, like a container or host dying."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Serve(Proc):
    """`serve` on a fixed loopback port (kept across restarts)."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, workers: int = 2) -> None:
        self.port = free_port()
        super().__init__(
            name, ["serve", "--port", str(self.port), "--workers", str(workers)], env, log_dir
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Serve:
        super().start()
        wait_healthy(self.url, lambda: self.alive, self.log_tail, timeout)
        return self


# -- a network path that can be cut ------------------------------------------------------


class TcpProxy:
    """A loopback TCP forwarder to `port`; `cut()` makes the far side unreachable.

    While cut, new connections are reset at once and open ones are torn down,
    so nothing written by a client during the cut reaches the server: the
    server's state is exactly what clients were told had succeeded.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._cut = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._open.discard(sock)

    def cut(self) -> None:
        """Reset every open connection and refuse new ones."""
        self._cut.set()
        with self._lock:
            for sock in list(self._open):
                _reset(sock)
            self._open.clear()

    def restore(self) -> None:
        """Let connections through again."""
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@contextlib.contextmanager
def s3_outage(moto: Any, proxy: TcpProxy, seconds: float) -> Iterator[None]:
    """S3 unreachable for `seconds`: the path is cut, then moto is stopped and restarted.

    moto keeps objects in memory only; they are copied out after the cut (so
    every acknowledged write is in the copy) and back in before the path is
    restored, as a real store would have kept them.
    """
    proxy.cut()
    try:
        state = moto.snapshot()
        moto.stop()
        yield
        time.sleep(seconds)
        moto.start()
        moto.restore(state)
    finally:
        proxy.restore()


# -- PostgreSQL ---------------------------------------------------------------------------


def pg_bin() -> Path | None:
    """The directory of Debian's PostgreSQL server binaries, if installed."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


class PrivatePostgres:
    """A throwaway PostgreSQL instance on a free port, safe to stop and restart."""

    def __init__(self) -> None:
        binaries = pg_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.bin = binaries
        self.dir = Path(tempfile.mkdtemp(prefix="mmsr-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres")
        self._run(
            "initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=300"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.dir / "data"),
            "-o",
            options,
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the cluster -------------------------------------------------------------------------


class Cluster:
    """`serves` web processes and `workers` worker processes on one index and one bucket."""

    def __init__(
        self,
        root: Path,
        *,
        database_url: str,
        storage_url: str,
        s3_env: dict[str, str],
        media: MediaServer,
        serves: int = 2,
        workers: int = 2,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.database_url = database_url
        self.storage_url = storage_url
        root.mkdir(parents=True, exist_ok=True)
        common = {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "RECEIVER_API_TOKEN": API_TOKEN,
            "RECEIVER_ADMIN_PASSWORD": "reliability-admin-password",
            "RECEIVER_SECRET_KEY": "reliability-secret-key",
            "RECEIVER_DATABASE_URL": database_url,
            "RECEIVER_STORAGE_URL": storage_url,
            "RECEIVER_MEDIA_HOSTS": media.host_port,
            "RECEIVER_INLINE_DEADLINE": "2",
            **s3_env,
            **(extra_env or {}),
        }
        common.pop("PROMETHEUS_MULTIPROC_DIR", None)

        def env(name: str) -> dict[str, str]:
            # Each process as if on its own host: its own data directory.
            return {**common, "RECEIVER_DATA_DIR": str(root / name)}

        self.serves = [Serve(f"serve{i}", env(f"serve{i}"), root) for i in range(serves)]
        self.workers = [
            Proc(f"worker{i}", ["worker", "--interval", "0.5"], env(f"worker{i}"), root)
            for i in range(workers)
        ]

    def start(self) -> Cluster:
        # The first start upgrades the schema; the others then find it ready.
        self.serves[0].start()
        for proc in [*self.serves[1:], *self.workers]:
            proc.start()
        return self

    def stop(self) -> None:
        for proc in [*self.serves, *self.workers]:
            proc.stop()

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.serves]

    def index(self) -> Any:
        from receiver.index import MediaIndex

        return MediaIndex.open(self.database_url, upgrade=False)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in [*self.serves, *self.workers])


# -- load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What the senders saw."""

    deliveries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    retried: int = 0
    undelivered: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def deliver(
    urls: Sequence[str],
    planned: Sequence[Planned],
    *,
    concurrency: int = 16,
    attempts: int = 8,
    timeout: float = 20.0,
) -> LoadResult:
    """POST every planned message (duplicates twice, to two servers at once), signed.

    A delivery that gets no answer or a 5xx is retried on the next server,
    as Twilio's retry or fallback URL would; each status is counted.
    """
    result = LoadResult()
    lock = threading.Lock()
    jobs: list[tuple[Planned, int]] = []
    for n, message in enumerate(planned):
        jobs.append((message, n))
        if message.duplicate:
            jobs.append((message, n + 1))
    random.Random(1).shuffle(jobs)
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        s: requests.Session = local.session
        return s

    def one(job: tuple[Planned, int]) -> None:
        message, start = job
        params = message.params()
        for attempt in range(attempts):
            url = urls[(start + attempt) % len(urls)] + "/twilio/messaging"
            signature = compute_signature(TOKEN, url, params)
            try:
                resp = session().post(
                    url, data=params, timeout=timeout, headers={"X-Twilio-Signature": signature}
                )
            except requests.RequestException:
                with lock:
                    result.connection_errors += 1
                    result.retried += 1
                local.__dict__.pop("session", None)
                time.sleep(min(0.25 * 2**attempt, 3.0))
                continue
            with lock:
                result.statuses[resp.status_code] += 1
                result.deliveries += 1
            if resp.status_code < 500:
                return
            with lock:
                result.retried += 1
            time.sleep(min(0.25 * 2**attempt, 3.0))
        with lock:
            result.undelivered.append(message.sid)

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, jobs))
    result.seconds = time.monotonic() - started
    return result


def wait_drained(index: Any, timeout: float, *, requeue_after: float | None = None) -> float:
    """Wait until no media item is pending or failed; seconds waited (raises on timeout)."""
    from receiver.errors import IndexUnavailable

    started = time.monotonic()
    requeued = False
    while True:
        try:
            backlog = index.backlog()
        except IndexUnavailable:
            backlog = {"pending": -1}
        waiting = backlog.get("pending", 0) + backlog.get("failed", 0)
        if waiting == 0:
            return time.monotonic() - started
        elapsed = time.monotonic() - started
        if requeue_after is not None and elapsed > requeue_after and not requeued:
            # What an operator does after an outage: `mms-receiver retry`.
            index.requeue_failed()
            requeued = True
        if elapsed > timeout:
            raise TimeoutError(
                f"media still waiting after {timeout:.0f} s: {backlog}; {waiting_reasons(index)}"
            )
        time.sleep(0.5)


def waiting_reasons(index: Any) -> dict[str, int]:
    """Why items are still waiting: (state, reason, detail) counts, for failure messages."""
    from sqlalchemy import select

    from receiver.index.schema import media as media_table

    with index.engine.connect() as conn:
        rows = conn.execute(
            select(media_table.c.state, media_table.c.reason, media_table.c.detail).where(
                media_table.c.state.in_(("pending", "failed"))
            )
        ).all()
    return dict(Counter(f"{s}:{r}:{(d or '')[:80]}" for s, r, d in rows))


# -- verification --------------------------------------------------------------------------


@dataclass
class Verification:
    """The end state against the plan."""

    messages_planned: int = 0
    messages_found: int = 0
    messages_lost: list[str] = field(default_factory=list)
    messages_duplicated: int = 0
    items_planned: int = 0
    items_stored: int = 0
    items_lost: list[str] = field(default_factory=list)
    items_not_stored: dict[str, int] = field(default_factory=dict)
    fetches_per_item: Counter[int] = field(default_factory=Counter)
    objects_found: int = 0
    objects_missing: list[str] = field(default_factory=list)
    objects_unexpected: list[str] = field(default_factory=list)
    objects_corrupt: list[str] = field(default_factory=list)

    @property
    def files_lost(self) -> int:
        return len(self.items_lost) + len(self.objects_missing) + len(self.objects_corrupt)

    @property
    def processed_twice(self) -> int:
        return sum(n for fetches, n in self.fetches_per_item.items() if fetches > 1)

    @property
    def ok(self) -> bool:
        return not (
            self.messages_lost
            or self.messages_duplicated
            or self.files_lost
            or self.items_not_stored
            or self.objects_unexpected
        )


def list_objects(s3: Any, bucket: str, prefix: str) -> dict[str, Any]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) :]] = obj
    return out


def verify(
    index: Any,
    planned: Sequence[Planned],
    media: MediaServer,
    s3: Any,
    bucket: str,
    prefix: str,
    *,
    check_bytes: bool = True,
) -> Verification:
    """Every planned message once, every file stored once, intact, and nothing else."""
    from sqlalchemy import func, select

    from receiver.index.schema import media as media_table
    from receiver.index.schema import messages as messages_table

    out = Verification(
        messages_planned=len(planned), items_planned=sum(len(p.items) for p in planned)
    )
    with index.engine.connect() as conn:
        out.messages_found = conn.execute(
            select(func.count()).select_from(messages_table)
        ).scalar_one()
        rows = conn.execute(select(media_table)).mappings().all()
    by_message: dict[str, list[Any]] = {}
    for row in rows:
        by_message.setdefault(row["message_sid"], []).append(row)
    objects = list_objects(s3, bucket, prefix)
    out.objects_found = len(objects)
    expected_keys: set[str] = set()
    fetch_counts = Counter(r.path for r in media.requests if r.method == "GET")
    for message in planned:
        found = index.get_message(message.sid)
        if found is None:
            out.messages_lost.append(message.sid)
            continue
        items = by_message.get(message.sid, [])
        if len(items) != len(message.items):
            out.messages_duplicated += len(items) > len(message.items)
        for item in message.items:
            out.fetches_per_item[fetch_counts[item.path]] += 1
            matching = [r for r in items if r["url"] == item.url]
            if len(matching) != 1:
                out.items_lost.append(item.path)
                continue
            row = matching[0]
            if row["state"] != "stored":
                key = f"{row['state']}:{row['reason']}"
                out.items_not_stored[key] = out.items_not_stored.get(key, 0) + 1
                continue
            out.items_stored += 1
            expected_keys.add(row["storage_key"])
            if row["thumbnail_key"]:
                expected_keys.add(row["thumbnail_key"])
            obj = objects.get(row["storage_key"])
            if obj is None:
                out.objects_missing.append(row["storage_key"])
                continue
            if obj["Size"] != len(item.payload.data) or row["sha256"] != item.payload.sha256:
                out.objects_corrupt.append(row["storage_key"])
            elif check_bytes:
                body = s3.get_object(Bucket=bucket, Key=prefix + row["storage_key"])["Body"].read()
                if hashlib.sha256(body).hexdigest() != item.payload.sha256:
                    out.objects_corrupt.append(row["storage_key"])
    out.objects_unexpected = sorted(set(objects) - expected_keys)
    return out


# -- conversations load ------------------------------------------------------------------------


@dataclass
class ConversationLoad:
    """Group MMS traffic: onMessageAdded webhooks with one MCS file each."""

    sids: list[str] = field(default_factory=list)
    deliveries: int = 0
    duplicates: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    undelivered: list[str] = field(default_factory=list)
    #: The slowest answer (Conversations gives a webhook 5 s).
    slowest: float = 0.0
    seconds: float = 0.0


def deliver_conversations(
    urls: Sequence[str],
    mcs: Any,
    count: int,
    *,
    duplicate_every: int = 4,
    conversations: int = 10,
    concurrency: int = 16,
) -> ConversationLoad:
    """POST `count` signed onMessageAdded webhooks spread over `conversations` threads, each
    with one photo stored in the fake MCS; every `duplicate_every`-th is also delivered again
    with RetryCount=1 to the other server at once (Twilio's retry)."""
    service = "IS" + os.urandom(16).hex()
    threads = ["CH" + os.urandom(16).hex() for _ in range(conversations)]
    jobs: list[tuple[str, list[tuple[str, str]], int]] = []
    result = ConversationLoad()
    for n in range(count):
        photo = samples.jpeg(48 + n % 32, 36, seed=n)
        media_sid = mcs.add(service, photo, "image/jpeg")
        sid = "IM" + os.urandom(16).hex()
        item = {
            "Sid": media_sid,
            "ContentType": "image/jpeg",
            "Filename": "p.jpg",
            "Size": len(photo),
        }
        params = [
            ("EventType", "onMessageAdded"),
            ("AccountSid", ACCOUNT_SID),
            ("ChatServiceSid", service),
            ("ConversationSid", threads[n % conversations]),
            ("MessageSid", sid),
            ("Index", str(n // conversations)),
            ("Author", f"+1555123{n % conversations:04d}"),
            ("ParticipantSid", "MB" + os.urandom(16).hex()),
            ("Body", f"photo {n}"),
            ("Attributes", "{}"),
            ("Source", "SMS"),
            ("Media", json.dumps([item])),
            ("RetryCount", "0"),
        ]
        result.sids.append(sid)
        jobs.append((sid, params, n))
        if duplicate_every and n % duplicate_every == 0:
            retry = [(k, "1" if k == "RetryCount" else v) for k, v in params]
            jobs.append((sid, retry, n + 1))
            result.duplicates += 1
    random.Random(2).shuffle(jobs)
    lock = threading.Lock()

    def one(job: tuple[str, list[tuple[str, str]], int]) -> None:
        sid, params, start = job
        for attempt in range(6):
            url = urls[(start + attempt) % len(urls)] + "/twilio/conversations"
            signature = compute_signature(TOKEN, url, params)
            began = time.monotonic()
            try:
                resp = requests.post(
                    url, data=params, timeout=20, headers={"X-Twilio-Signature": signature}
                )
            except requests.RequestException:
                time.sleep(min(0.25 * 2**attempt, 3.0))
                continue
            took = time.monotonic() - began
            with lock:
                result.statuses[resp.status_code] += 1
                result.deliveries += 1
                result.slowest = max(result.slowest, took)
            if resp.status_code < 500:
                return
            time.sleep(min(0.25 * 2**attempt, 3.0))
        with lock:
            result.undelivered.append(sid)

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, jobs))
    result.seconds = time.monotonic() - started
    return result


def conversation_losses(index: Any, sids: Sequence[str]) -> tuple[int, int, int]:
    """(messages missing, messages without exactly one stored file, files stored) for `sids`."""
    missing = wrong = stored = 0
    for sid in sids:
        if index.account_of(sid) is None:
            missing += 1
            continue
        items = index.media_of(sid)
        done = [m for m in items if m.state == "stored" and m.storage_key]
        stored += len(done)
        wrong += len(items) != 1 or len(done) != 1
    return missing, wrong, stored
