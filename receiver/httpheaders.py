"""HTTP response header values that more than one of our HTTP clients reads."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["retry_after"]


def retry_after(
    value: str | None, *, dates: bool = True, now: datetime | None = None
) -> float | None:
    """Seconds to wait from a Retry-After header, or None when it is absent or unreadable.

    Reads the delta-seconds form (``"120"``) and, unless `dates` is False, the
    HTTP-date form, which counts from `now` (default: the current time) and is
    0 once past (RFC 9110, section 10.2.3).
    """
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # str.isdigit alone accepts "²", which float refuses
        return float(text)
    if not dates:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
