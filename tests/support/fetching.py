"""Helpers for tests of the media fetcher: short-timeout configs and a fake resolver."""

from __future__ import annotations

from typing import Any

from receiver.media.fetch import FetchConfig, Fetcher, FetchResult
from tests.support.mediaserver import MediaServer


def config(*servers: MediaServer, **overrides: Any) -> FetchConfig:
    """Short timeouts and backoff so failure paths stay fast."""
    values: dict[str, Any] = {
        "allowed_hosts": tuple(s.host_port for s in servers),
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "deadline": 5.0,
        "backoff": 0.01,
    }
    values.update(overrides)
    return FetchConfig(**values)


def fetcher(*servers: MediaServer, resolver: Any = None, **overrides: Any) -> Fetcher:
    """A Fetcher allowed to reach `servers` (host:port entries, so loopback is fine)."""
    return Fetcher(config(*servers, **overrides), resolver=resolver)


def read_all(result: FetchResult) -> bytes:
    """The downloaded bytes; the spooled file is closed afterwards."""
    try:
        return result.file.read()
    finally:
        result.close()


class FakeDNS:
    """A resolver that answers from a table and counts lookups."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return list(self.table[host])
