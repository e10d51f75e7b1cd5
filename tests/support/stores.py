"""Helpers for the ObjectStore tests: streams that behave like network bodies, and the
store methods that take a key."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any


class FailingReader(io.RawIOBase):
    """Yields `limit` bytes (at most `step` a read), then raises OSError, like a connection
    reset mid-body."""

    def __init__(self, limit: int, step: int | None = None) -> None:
        self.limit = limit
        self.step = step
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.sent >= self.limit:
            raise OSError("connection reset by peer")
        n = min(len(buffer), self.limit - self.sent, self.step or len(buffer))
        buffer[:n] = b"x" * n
        self.sent += n
        return n


class Trickle(io.RawIOBase):
    """A non-seekable stream returning short reads (at most `step` bytes) of `data`."""

    def __init__(self, data: bytes, step: int = 777) -> None:
        self.data = data
        self.pos = 0
        self.step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self.data[self.pos : self.pos + min(self.step, len(buffer))]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def key_calls(store: Any, key: str) -> list[Callable[[], object]]:
    """A call of every ObjectStore method that takes one object key, with `key`."""
    return [
        lambda: store.put_bytes(key, b"x", content_type="text/plain"),
        lambda: store.put(key, io.BytesIO(b"x"), content_type="text/plain"),
        lambda: store.open(key),
        lambda: store.open_range(key, 0, None),
        lambda: store.stat(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.presigned_url(key),
    ]
