"""Debian's nginx as a process of the tests and benchmarks: find it, configure it in a
directory of its own, and start it in the foreground."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.support.services import port_open


def nginx_binary() -> str | None:
    """nginx on PATH or Debian's /usr/sbin/nginx; None when not installed."""
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def write_config(prefix: Path, http: str, *, connections: int = 64) -> Path:
    """An nginx.conf under `prefix` (pid, logs and temporary files there too) whose
    `http` block is `http`; its path."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\n"
        f"events {{ worker_connections {connections}; }}\n"
        "http {\n"
        f"  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n"
        f"  fastcgi_temp_path {prefix}/fastcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n"
        f"  scgi_temp_path {prefix}/scgi;\n"
        f"{http}"
        "}\n"
    )
    return conf


def start(binary: str, conf: Path, port: int) -> subprocess.Popen[bytes]:
    """nginx in the foreground with `conf` (checked first), once `port` accepts."""
    args = [binary, "-p", str(conf.parent), "-c", str(conf)]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"nginx refused its configuration: {check.stderr}")
    proc = subprocess.Popen(
        [*args, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise RuntimeError(f"nginx did not start: {err.decode(errors='replace')}")
        time.sleep(0.05)
    return proc
