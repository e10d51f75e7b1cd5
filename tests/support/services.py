"""Skip-or-fail for tests that need a service: skip locally, never skip under CI=true."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(available: bool, reason: str) -> None:
    """Skip the test with `reason` when a service is missing; under CI=true fail instead."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def have_executable(name: str) -> bool:
    """Whether `name` is on PATH."""
    return shutil.which(name) is not None


def free_port() -> int:
    """A currently unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    url: str, alive: Callable[[], bool], log: Callable[[], str], timeout: float
) -> None:
    """Wait until `url`/healthz answers 200; RuntimeError with the log if the process
    (`alive`) ends or the time runs out."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{url} exited:\n{log()}")
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start:\n{log()}")
