"""Per-sender token buckets, so bulk sends stay within each sender's throughput.

Twilio queues what a sender cannot send at once, but a queue holds only about
four hours of messages (error 21611, https://www.twilio.com/docs/api/errors/21611)
and queued messages expire after their ValidityPeriod, so a large send is paced
here instead. Defaults by sender type: a US/CA long code sends 1 message segment
per second and a short code 30
(https://www.twilio.com/help/faq/sms/how-quickly-can-i-send-sms-messages), a
toll-free number 3 (https://support.twilio.com/hc/en-us/articles/4411046744987).
A Messaging Service spreads over its pool, whose size is not known here, so it
gets the long-code rate unless configured.

The limiter is per process; run one bulk send per sender at a time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from receiver.errors import ConfigError
from receiver.twilio import sids

SENDER_TYPES = ("long_code", "toll_free", "short_code", "messaging_service", "alphanumeric")

_TOLL_FREE = re.compile(r"\+18(00|33|44|55|66|77|88)[0-9]{7}")
_SHORT_CODE = re.compile(r"[0-9]{3,8}")
_ALPHANUMERIC = re.compile(r"[A-Za-z0-9 ]{1,11}")


def sender_type(sender: str) -> str:
    """Classify a sender: ``long_code``, ``toll_free``, ``short_code``, ``messaging_service``
    or ``alphanumeric``."""
    value = sender.strip()
    if sids.MESSAGING_SERVICE.fullmatch(value):
        return "messaging_service"
    if _TOLL_FREE.fullmatch(value):
        return "toll_free"
    if _SHORT_CODE.fullmatch(value):
        return "short_code"
    if not value.startswith("+") and _ALPHANUMERIC.fullmatch(value) and not value.isdigit():
        return "alphanumeric"
    return "long_code"


@dataclass(frozen=True)
class RateLimits:
    """Message segments per second, by sender type, plus exact per-sender overrides."""

    long_code: float = 1.0
    toll_free: float = 3.0
    short_code: float = 30.0
    messaging_service: float = 1.0
    alphanumeric: float = 1.0
    per_sender: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in SENDER_TYPES:
            if not getattr(self, name) > 0:
                raise ConfigError(f"rate limit {name} must be a positive number per second")
        for sender, rate in self.per_sender.items():
            if not rate > 0:
                raise ConfigError(f"rate limit for {sender} must be a positive number per second")
        object.__setattr__(self, "per_sender", dict(self.per_sender))

    def rate_for(self, sender: str) -> float:
        """Segments per second allowed for `sender`."""
        if sender in self.per_sender:
            return self.per_sender[sender]
        rate: float = getattr(self, sender_type(sender))
        return rate

    @classmethod
    def parse(cls, text: str) -> RateLimits:
        """Read ``long_code=1,toll_free=3,+15017122661=10`` (types or exact senders).

        ConfigError names the entry that is wrong.
        """
        by_type: dict[str, float] = {}
        per_sender: dict[str, float] = {}
        for entry in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = entry.partition("=")
            try:
                rate = float(value)
            except ValueError:
                rate = -1.0
            if not sep or not name.strip() or rate <= 0:
                raise ConfigError(
                    f"rate limit entry {entry!r} must be name=messages-per-second, "
                    "e.g. toll_free=3 or +15017122661=10"
                )
            key = name.strip()
            if key in SENDER_TYPES:
                by_type[key] = rate
            else:
                per_sender[key] = rate
        return cls(per_sender=per_sender, **by_type)


class TokenBucket:
    """A token bucket that hands out reservations: callers wait their turn, in order."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self, cost: float = 1.0) -> float:
        """Take `cost` tokens now; return how many seconds the caller must wait first."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= cost
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class RateLimiter:
    """One token bucket per sender, created on first use with the sender's rate."""

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = limits or RateLimits()
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, sender: str) -> TokenBucket:
        """The bucket of `sender` (created with its configured rate)."""
        with self._lock:
            bucket = self._buckets.get(sender)
            if bucket is None:
                rate = self.limits.rate_for(sender)
                bucket = self._buckets[sender] = TokenBucket(rate, clock=self._clock)
            return bucket

    def acquire(self, sender: str, cost: float = 1.0) -> float:
        """Block until `sender` may send `cost` segments; return the seconds waited."""
        wait = self.bucket(sender).reserve(cost)
        if wait > 0:
            self._sleep(wait)
        return wait
