"""The one Retry-After parser, shared by the Twilio REST client and the media fetcher."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from receiver.httpheaders import retry_after

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_delta_seconds() -> None:
    assert retry_after("7") == 7.0
    assert retry_after(" 120 ") == 120.0
    assert retry_after("0") == 0.0


def test_an_http_date_counts_from_now() -> None:
    when = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert retry_after(when, now=NOW) == 30.0
    live = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after(live) or 0) <= 30


def test_a_past_date_means_now() -> None:
    assert retry_after(format_datetime(NOW - timedelta(hours=1), usegmt=True), now=NOW) == 0.0


def test_dates_can_be_ignored() -> None:
    when = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert retry_after(when, dates=False, now=NOW) is None
    assert retry_after("30", dates=False) == 30.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "²", "Mon, 99 Foo 2026"])
def test_unreadable_values_are_none(value: str | None) -> None:
    assert retry_after(value) is None
