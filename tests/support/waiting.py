"""Waiting in tests for what background threads do."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], seconds: float = 10, interval: float = 0.05) -> bool:
    """Whether `predicate()` became true within `seconds`, polling every `interval`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
