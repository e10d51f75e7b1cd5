"""A fast webhook endpoint for benchmarks: Debian's nginx answering 204 on loopback.

The business's endpoint runs on its own machines; on this one it shares the
cores with the receiver being measured. nginx answers an event in tens of
microseconds (the Python receiver of the tests takes about 0.25 ms of CPU),
so the figures measure the receiver's cost, not the endpoint's. Each
request's `webhook-id` and arrival time (`$msec`) go to an access log, which
`received()` reads.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support import nginx
from tests.support.services import free_port

nginx_binary = nginx.nginx_binary


class NginxSink:
    """nginx answering every POST with 204 and logging `webhook-id` with its arrival time."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="nginx-sink-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NginxSink:
        conf = nginx.write_config(
            self._dir,
            "  log_format hooks '$http_webhook_id $msec';\n"
            f"  access_log {self._dir}/access.log hooks;\n"
            "  keepalive_requests 1000000;\n"
            f"  server {{ listen 127.0.0.1:{self.port}; location / {{ return 204; }} }}\n",
            connections=256,
        )
        self._proc = nginx.start(self.binary, conf, self.port)
        return self

    def received(self) -> list[dict[str, object]]:
        """Each request so far: {"id": webhook-id, "at": Unix time}."""
        log = self._dir / "access.log"
        if not log.exists():
            return []
        out: list[dict[str, object]] = []
        for line in log.read_text().splitlines():
            event_id, _, at = line.rpartition(" ")
            out.append({"id": event_id, "at": float(at)})
        return out

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)
