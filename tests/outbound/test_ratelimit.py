"""Per-sender token buckets: defaults by sender type, configuration, pacing."""

from __future__ import annotations

import threading
import time

import pytest

from receiver.errors import ConfigError
from receiver.ratelimit import RateLimiter, RateLimits, TokenBucket, sender_type


class Clock:
    """A clock that only moves when sleep() is called."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("sender", "kind"),
    [
        ("+15017122661", "long_code"),
        ("+447700900123", "long_code"),
        ("+18005550123", "toll_free"),
        ("+18885550123", "toll_free"),
        ("+18335550123", "toll_free"),
        ("12345", "short_code"),
        ("894546", "short_code"),
        ("MG" + "a" * 32, "messaging_service"),
        ("ACME", "alphanumeric"),
    ],
)
def test_sender_types(sender: str, kind: str) -> None:
    assert sender_type(sender) == kind


def test_default_rates_by_sender_type() -> None:
    limits = RateLimits()
    assert limits.rate_for("+15017122661") == 1.0
    assert limits.rate_for("+18005550123") == 3.0
    assert limits.rate_for("12345") == 30.0


def test_rates_are_configurable_by_type_and_sender() -> None:
    limits = RateLimits.parse("toll_free=25, +15017122661=10,short_code=100")
    assert limits.rate_for("+18005550123") == 25.0
    assert limits.rate_for("+15017122661") == 10.0
    assert limits.rate_for("+15017122662") == 1.0
    assert limits.rate_for("12345") == 100.0
    for bad in ("toll_free", "toll_free=0", "long_code=fast", "=3"):
        with pytest.raises(ConfigError, match="messages-per-second"):
            RateLimits.parse(bad)


def test_long_code_sends_one_per_second() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(4):
        limiter.acquire("+15017122661")
    assert clock.slept == [1.0, 1.0, 1.0]


def test_toll_free_bursts_three_then_paces() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    waits = [limiter.acquire("+18005550123") for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([1 / 3] * 3)


def test_senders_do_not_share_a_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    assert limiter.acquire("+15017122661") == 0.0
    assert limiter.acquire("+15017122662") == 0.0
    assert limiter.acquire("+15017122661") == 1.0


def test_segments_cost_more_than_one_token() -> None:
    clock = Clock()
    bucket = TokenBucket(3.0, clock=clock)
    assert bucket.reserve(3) == 0.0
    assert bucket.reserve(3) == pytest.approx(1.0)


def test_concurrent_callers_wait_their_turn_in_real_time() -> None:
    limiter = RateLimiter(RateLimits(per_sender={"+15017122661": 20.0}))
    started = time.monotonic()
    threads = [threading.Thread(target=limiter.acquire, args=("+15017122661",)) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 20 at once (the burst), then 10 more at 20/s.
    assert 0.4 <= time.monotonic() - started < 2.0
