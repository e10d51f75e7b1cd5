"""When to try a failed delivery again, and when to give up on an endpoint."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

#: RECEIVER_EVENT_RETRY_SCHEDULE's default: seconds before each retry, about 27 h in all.
DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
#: RECEIVER_EVENT_DISABLE_AFTER's default: 5 days without a success disables an endpoint.
DEFAULT_DISABLE_AFTER = 5 * 24 * 3600.0
#: Retries are spread by up to this fraction of their delay.
JITTER = 0.10


@dataclass(frozen=True)
class RetryPolicy:
    """The retry schedule (seconds after each failed attempt) and the disable rule."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    disable_after: float = DEFAULT_DISABLE_AFTER

    @property
    def max_attempts(self) -> int:
        """The first attempt and one per entry of the schedule."""
        return len(self.schedule) + 1

    def next_attempt(
        self, attempt: int, now: datetime, rng: random.Random | None = None
    ) -> datetime | None:
        """When to try again after attempt number `attempt` (from 1) failed; None: give up."""
        if attempt > len(self.schedule):
            return None
        delay = self.schedule[attempt - 1]
        spread = (rng or random).uniform(0, JITTER) * delay
        return now + timedelta(seconds=delay + spread)

    def first_retry(self, now: datetime) -> datetime:
        """When a delivery that was not tried (its endpoint is failing) is due again."""
        return now + timedelta(seconds=self.schedule[0] if self.schedule else 5.0)

    def gives_up(self, last_success: datetime, now: datetime) -> bool:
        """Whether an endpoint without a success since `last_success` must be disabled."""
        return now - last_success >= timedelta(seconds=self.disable_after)


def parse_schedule(raw: str) -> tuple[float, ...]:
    """`"5,300,1800"` as seconds; ValueError naming the bad entry."""
    out = []
    for part in raw.split(","):
        text = part.strip()
        if not text:
            continue
        value = float(text)
        if value < 0 or value != value:
            raise ValueError(f"{text!r} is not a number of seconds >= 0")
        out.append(value)
    return tuple(out)
