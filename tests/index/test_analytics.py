"""receiver.index.analytics on SQLite and PostgreSQL: the aggregates match seeded traffic.

What each figure must be is worked out here from `tests.support.traffic.TRAFFIC`
with plain Python; the index computes it with GROUP BY.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

import pytest

from receiver.index import MediaIndex
from receiver.index.analytics import (
    LARGEST_BUCKET,
    SERIES,
    SINGLE_SENDS,
    SIZE_BUCKETS,
    DateRange,
    InvalidRange,
    analytics,
    parse_range,
)
from receiver.index.outbound import OutboundIndex
from receiver.index.schema import utcnow
from receiver.twilio.errorcodes import DESCRIPTIONS
from receiver.twilio.webhook import parse_status
from tests.support.traffic import TRAFFIC, seed

ACCT = "AC" + "1" * 32


def _label(at: datetime, rng: DateRange) -> str:
    return at.strftime("%Y-%m-%d %H:00") if rng.hourly else at.date().isoformat()


def _inside(at: datetime, rng: DateRange) -> bool:
    return rng.since <= at.date() <= rng.until


def expected_series(rng: DateRange) -> dict[str, dict[str, float]]:
    """Every bucket of `rng` (zeros included) with each SERIES figure, from TRAFFIC."""
    out: dict[str, dict[str, float]] = {}
    step = timedelta(hours=1) if rng.hourly else timedelta(days=1)
    at = rng.start
    while at < rng.end:
        out[_label(at, rng)] = dict.fromkeys(SERIES, 0)
        at += step
    for m in TRAFFIC.inbound:
        if _inside(m.at, rng):
            entry = out[_label(m.at, rng)]
            entry["inbound"] += 1
            entry["opt_outs"] += m.keyword == "STOP"
            entry["opt_ins"] += m.keyword == "START"
    for o in TRAFFIC.outbound:
        if _inside(o.at, rng) and o.accepted:
            entry = out[_label(o.at, rng)]
            entry["outbound"] += 1
            status = "delivered" if o.status == "read" else o.status
            if status in ("delivered", "undelivered", "failed"):
                entry[status] += 1
            entry["cost"] += -(o.price or 0)
    return out


def assert_same_series(got: dict[str, dict[str, float]], want: dict[str, dict[str, float]]) -> None:
    assert got.keys() == want.keys()
    for label, values in want.items():
        for name in SERIES:
            assert got[label][name] == pytest.approx(values[name]), (label, name)


def test_daily_series_match_the_seeded_traffic(index: MediaIndex) -> None:
    seed(index.engine)
    rng = DateRange(date(2024, 5, 1), date(2024, 5, 4))
    result = analytics(index, rng)
    assert not rng.hourly
    want = expected_series(rng)
    assert list(result.per_bucket) == list(want)  # every day, in order, the empty 3 May too
    assert_same_series(result.per_bucket, want)
    assert result.per_bucket["2024-05-03"] == dict.fromkeys(SERIES, 0)
    for name in SERIES:
        assert result.totals[name] == pytest.approx(sum(v[name] for v in want.values()))


@pytest.mark.parametrize("until", [date(2024, 5, 1), date(2024, 5, 2)])
def test_ranges_up_to_two_days_are_counted_per_hour(index: MediaIndex, until: date) -> None:
    seed(index.engine)
    rng = DateRange(date(2024, 5, 1), until)
    result = analytics(index, rng)
    assert rng.hourly and len(result.per_bucket) == 24 * rng.days
    want = expected_series(rng)
    assert list(result.per_bucket) == list(want)
    assert_same_series(result.per_bucket, want)
    # The STOP at 23:59 on 1 May and the START at 00:00 on 2 May land in their own hours.
    assert result.per_bucket["2024-05-01 23:00"]["opt_outs"] == 1
    if until.day == 2:
        assert result.per_bucket["2024-05-02 00:00"]["opt_ins"] == 1


def test_media_funnel_errors_and_cost_by_batch(index: MediaIndex) -> None:
    seed(index.engine)
    rng = DateRange(date(2024, 5, 1), date(2024, 5, 4))
    result = analytics(index, rng)
    inbound = [m for m in TRAFFIC.inbound if _inside(m.at, rng)]
    kinds = Counter(kind for m in inbound for kind, _ in m.items)
    assert result.media_by_kind == dict(sorted(kinds.items()))

    def size_label(size: int) -> str:
        return next((label for label, bound in SIZE_BUCKETS if size < bound), LARGEST_BUCKET)

    sizes = Counter(size_label(size) for m in inbound for _, size in m.items if size is not None)
    assert result.media_by_size == {label: sizes.get(label, 0) for label in result.media_by_size}
    assert sum(result.media_by_size.values()) == sum(sizes.values())

    sent = [o for o in TRAFFIC.outbound if _inside(o.at, rng) and o.accepted]
    statuses = Counter(o.status for o in sent)
    assert result.funnel == {
        "queued": len(sent),
        "sent": sum(statuses[s] for s in ("sent", "delivered", "undelivered", "read")),
        "delivered": statuses["delivered"] + statuses["read"],
        "undelivered": statuses["undelivered"],
        "failed": statuses["failed"],
    }
    codes = Counter(o.error_code for o in sent if o.error_code is not None)
    assert {e["code"]: e["count"] for e in result.error_codes} == dict(codes)
    assert result.error_codes[0]["count"] == max(codes.values())  # most frequent first
    for entry in result.error_codes:
        assert entry["description"] == DESCRIPTIONS[entry["code"]]
    # 21610 was refused before reaching Twilio (no MessageSid): not an outbound figure.
    assert 21610 not in codes

    batches: dict[str, list[float]] = {}
    for o in sent:
        name = o.key.split(":", 1)[0] if o.key and ":" in o.key else SINGLE_SENDS
        batches.setdefault(name, []).append(-(o.price or 0))
    assert {b["batch"]: b["messages"] for b in result.cost_by_batch} == {
        k: len(v) for k, v in batches.items()
    }
    assert {b["batch"]: b["cost"] for b in result.cost_by_batch} == pytest.approx(
        {k: sum(v) for k, v in batches.items()}
    )
    costs = [b["cost"] for b in result.cost_by_batch]
    assert costs == sorted(costs, reverse=True)  # dearest batch first
    assert result.cost_unit == "USD"


def test_an_empty_range_is_all_zeros(index: MediaIndex) -> None:
    seed(index.engine)
    result = analytics(index, DateRange(date(2023, 1, 1), date(2023, 1, 31)))
    assert len(result.per_bucket) == 31
    assert not any(any(v.values()) for v in result.per_bucket.values())
    assert result.funnel == dict.fromkeys(result.funnel, 0)
    assert result.error_codes == [] and result.cost_by_batch == []
    assert result.cost_unit is None


def test_parse_range_defaults_and_refusals() -> None:
    today = date(2024, 5, 31)
    assert parse_range(None, None, today=today) == DateRange(date(2024, 5, 2), today)
    assert parse_range("2024-05-01", "2024-05-01", today=today).hourly
    for since, until, name in [
        ("2024-05-02", "2024-05-01", "since"),
        ("2024-5-1", None, "since"),
        (None, "yesterday", "until"),
        ("2000-01-01", "2024-05-01", "since"),
        ("2024-02-30", None, "since"),
        ("9999-12-01", "9999-12-31", "since"),
        (None, "9999-12-31", "until"),
        ("0001-01-01", "0001-01-02", "since"),
    ]:
        with pytest.raises(InvalidRange) as caught:
            parse_range(since, until, today=today)
        assert caught.value.parameter == name


def test_prices_are_recorded_for_final_messages(index: MediaIndex) -> None:
    outbound = OutboundIndex(index.engine, begin=index.begin)
    sid = "SM" + "1" * 32
    hour_ago = utcnow() - timedelta(hours=1)
    row, created = outbound.reserve({"idempotency_key": "k1", "to_addr": "+15558675310"})
    assert created and outbound.claim(row.id)
    outbound.mark_submitted(row.id, {"sid": sid, "status": "queued"})
    assert outbound.unpriced_final(hour_ago) == []  # in flight: Twilio has no price yet
    outbound.record_status(
        parse_status([("MessageSid", sid), ("MessageStatus", "delivered"), ("AccountSid", ACCT)])
    )
    assert [r.sid for r in outbound.unpriced_final(hour_ago)] == [sid]
    assert outbound.unpriced_final(utcnow() + timedelta(minutes=1)) == []  # outside the window
    outbound.record_price(sid, -0.0079, "USD")
    assert outbound.unpriced_final(hour_ago) == []
    stored = outbound.by_sid(sid)
    assert stored is not None
    assert stored.price == pytest.approx(-0.0079) and stored.price_unit == "USD"
