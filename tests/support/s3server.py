"""moto's standalone S3 server as a real subprocess on loopback, for integration tests.

The server is ``python -m moto.server -H 127.0.0.1 -p PORT``: a separate
process speaking HTTP, so tests exercise boto3's real network path
(connections, timeouts, retries, multipart, presigned URLs) instead of
in-process patching.

Use it as a pytest fixture (from a conftest.py or a test module)::

    from tests.support.s3server import moto_server_fixture

    moto_s3 = moto_server_fixture()                  # session-scoped, shared
    moto_s3_private = moto_server_fixture(scope="module")  # one you may stop

    def test_something(moto_s3, monkeypatch):
        bucket = moto_s3.new_bucket()
        for name, value in moto_s3.env().items():
            monkeypatch.setenv(name, value)
        store = open_store(f"s3://{bucket}/prefix")

When the server cannot start, the fixture skips the test locally and fails it
under ``CI=true`` (`tests.support.services.require`).

Outages: `stop()` then `start()` restarts on the same port (clients keep
their endpoint URL); `outage()` does both around a ``with`` block. moto keeps
its state in memory, so by default the buckets and objects are snapshotted
before the stop and restored after the start, as a real store would keep
them. `pause()`/`resume()` freeze the process instead (SIGSTOP/SIGCONT):
connections are accepted by the kernel but never answered, which exercises
read timeouts rather than refused connections.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port, require

HOST = "127.0.0.1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


class MotoUnavailable(RuntimeError):
    """moto's server could not be started (not installed, or it died on start-up)."""


class MotoS3Server:
    """One `python -m moto.server` subprocess on a fixed loopback port."""

    def __init__(self, port: int | None = None, *, startup_timeout: float = 20.0) -> None:
        """Prepare a server on `port` (a free one if None); `start()` launches it."""
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._client: Any = None
        self._log_dir = Path(tempfile.mkdtemp(prefix="moto-s3-"))
        self._log_path = self._log_dir / "server.log"

    # -- addresses and clients ---------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The server's base URL, for AWS_ENDPOINT_URL or boto3's endpoint_url."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the subprocess is alive (it may be paused)."""
        return self._process is not None and self._process.poll() is None

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and the service) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server; `config` goes to botocore's Config.

        Its defaults fail fast (1 s timeouts, one attempt), so a test that
        stops the server does not wait on retries. Without `config` the same
        client is returned each time (building one costs ~0.1 s); it survives
        restarts because the port does not change.
        """
        if not config and self._client is not None:
            return self._client
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "connect_timeout": 1,
            "read_timeout": 5,
            "retries": {"mode": "standard", "total_max_attempts": 1},
            "s3": {"addressing_style": "path"},
        }
        options.update(config)
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(**options),
        )
        if not config:
            self._client = client
        return client

    def new_bucket(self, prefix: str = "test") -> str:
        """Create a bucket with a unique name and return the name (isolates tests)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Launch the server and wait until it answers; MotoUnavailable if it cannot."""
        if self.running:
            return
        for attempt in range(3):
            log = self._log_path.open("ab")
            try:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C in the terminal reaches pytest,
                    # which then stops the server through stop().
                    start_new_session=True,
                    env=_server_env(),
                )
            finally:
                log.close()
            self._paused = False
            if self._wait_ready():
                return
            self._kill()
            # Another process may have taken a port we picked at random.
            if self._fixed_port or attempt == 2:
                break
            self.port = free_port()
            self._client = None  # bound to the old port
        raise MotoUnavailable(
            f"moto server did not start on {self.endpoint_url}; log:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it; its state is lost."""
        if self._process is None:
            return
        if self._paused:
            # A stopped process does not act on SIGTERM until continued.
            self._signal(signal.SIGCONT)
            self._paused = False
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill()
        self._process = None

    def restart(self, *, preserve: bool = True) -> None:
        """Stop and start again on the same port, keeping buckets and objects if `preserve`."""
        snapshot = self.snapshot() if preserve and self.running and not self._paused else None
        self.stop()
        self.start()
        if snapshot is not None:
            self.restore(snapshot)

    @contextlib.contextmanager
    def outage(self, *, preserve: bool = True) -> Iterator[None]:
        """Keep the server down for the duration of the ``with`` block, then bring it back."""
        snapshot = self.snapshot() if preserve and self.running else None
        self.stop()
        try:
            yield
        finally:
            self.start()
            if snapshot is not None:
                self.restore(snapshot)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang instead of being refused."""
        if self.running and not self._paused:
            self._signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        if self._paused:
            self._signal(signal.SIGCONT)
            self._paused = False

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset API); faster than a restart."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=5):  # loopback only
            pass

    # -- state across restarts ---------------------------------------------

    def snapshot(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Every bucket's objects with their body, content type and metadata (small test data)."""
        client = self.client()
        state: list[tuple[str, list[dict[str, Any]]]] = []
        for bucket in client.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            objects: list[dict[str, Any]] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                for item in page.get("Contents", []):
                    got = client.get_object(Bucket=name, Key=item["Key"])
                    objects.append(
                        {
                            "Key": item["Key"],
                            "Body": got["Body"].read(),
                            "ContentType": got.get("ContentType") or "binary/octet-stream",
                            "Metadata": got.get("Metadata") or {},
                        }
                    )
            state.append((name, objects))
        return state

    def restore(self, state: list[tuple[str, list[dict[str, Any]]]]) -> None:
        """Recreate the buckets and objects of a `snapshot()`."""
        client = self.client()
        for name, objects in state:
            client.create_bucket(Bucket=name)
            for obj in objects:
                client.put_object(Bucket=name, **obj)

    # -- internals ----------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's output, for failure messages."""
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.endpoint_url}/moto-api/"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def _signal(self, signum: int) -> None:
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signum)

    def _kill(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=5)
        self._process = None
        self._paused = False

    def __enter__(self) -> MotoS3Server:
        """Start the server."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server."""
        self.stop()


def start_moto_server(port: int | None = None) -> MotoS3Server:
    """Start a server, or skip the calling test (fail under CI=true) if moto cannot run."""
    server = MotoS3Server(port)
    try:
        server.start()
    except MotoUnavailable as exc:
        require(False, f"moto's S3 server is needed: {exc}")
    return server


def moto_server_fixture(scope: str = "session", name: str | None = None) -> Callable[..., Any]:
    """Build a pytest fixture yielding a running `MotoS3Server`, stopped at the end of `scope`.

    Assign the result to a module-level name in a conftest.py or test module;
    that name (or `name`) is the fixture's name.
    """

    def fixture() -> Iterator[MotoS3Server]:
        """A running moto S3 server for the fixture's scope."""
        server = start_moto_server()
        try:
            yield server
        finally:
            server.stop()

    return pytest.fixture(scope=scope, name=name)(fixture)  # type: ignore[call-overload]


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    # Keep the server's own output unbuffered so log_tail() shows start-up errors.
    env["PYTHONUNBUFFERED"] = "1"
    return env
