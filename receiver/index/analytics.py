"""Figures of the /analytics page and `GET /api/stats`: every one an aggregate in SQL.

Rows are grouped by a date expression each backend evaluates itself
(a prefix of the stored text on SQLite, `date_trunc` on PostgreSQL), so a
ten-year range over 100k messages returns a few thousand small rows and
Python never walks the messages (docs/design.md, "Analytics"). Times are
UTC; `since` and `until` are whole days, both included. Ranges of up to
two days are counted per hour, longer ones per day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select, union_all
from sqlalchemy.sql.elements import ColumnClause

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.rollups import DELIVERED, MICROS, SENT, SIZE_BOUNDS
from receiver.index.schema import (
    daily_batches,
    daily_inbound,
    daily_media,
    daily_outbound,
    media,
    messages,
    outbound_messages,
)
from receiver.twilio.errorcodes import describe

#: Per-bucket figures, in the order of the CSV columns after `date`.
SERIES = (
    "inbound",
    "outbound",
    "delivered",
    "undelivered",
    "failed",
    "opt_outs",
    "opt_ins",
    "cost",
)
#: The outbound funnel: each stage counts the messages whose current status is in its set.
FUNNEL: dict[str, tuple[str, ...]] = {
    "queued": (),  # every message Twilio accepted (it has a MessageSid)
    "sent": SENT,
    "delivered": DELIVERED,
    "undelivered": ("undelivered",),
    "failed": ("failed",),
}
#: Size buckets of stored media: upper bounds in bytes (5 MB is the MMS carrier limit).
SIZE_BUCKETS = tuple(zip(("under 100 kB", "100 kB to 1 MB", "1 to 5 MB"), SIZE_BOUNDS, strict=True))
LARGEST_BUCKET = "5 MB or more"
#: Longest range accepted (ten years and a few leap days).
MAX_DAYS = 3660
HOURLY_UP_TO_DAYS = 2
FIRST_YEAR, LAST_YEAR = 1970, 9998
TOP_ERRORS = 20
TOP_BATCHES = 20
SINGLE_SENDS = "(single sends)"


@dataclass(frozen=True)
class DateRange:
    """Whole UTC days from `since` to `until`, both included."""

    since: date
    until: date

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def hourly(self) -> bool:
        return self.days <= HOURLY_UP_TO_DAYS

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the range."""
        return datetime.combine(self.until, time.min, tzinfo=UTC) + timedelta(days=1)

    def buckets(self) -> list[str]:
        """Every bucket label of the range, in order (the labels the SQL produces)."""
        if self.hourly:
            return [
                (self.start + timedelta(hours=h)).strftime("%Y-%m-%d %H:00")
                for h in range(self.days * 24)
            ]
        return [(self.since + timedelta(days=d)).isoformat() for d in range(self.days)]


class InvalidRange(ValueError):
    """`since`/`until` that cannot be used; names the parameter and the fix."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


def parse_range(since: str | None, until: str | None, *, today: date | None = None) -> DateRange:
    """A DateRange from `YYYY-MM-DD` strings; the last 30 days when both are missing."""
    given = _day("since", since)
    last = _day("until", until) or (today or datetime.now(UTC).date())
    first = given or last - timedelta(days=29)
    if first > last:
        raise InvalidRange("since", "since must be on or before until")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidRange("since", f"the range may span at most {MAX_DAYS} days")
    return DateRange(first, last)


def _day(name: str, raw: str | None) -> date | None:
    if raw is None or raw == "":
        return None
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        day = date.fromisoformat(raw)
    except ValueError:
        raise InvalidRange(name, f"{name} must be a date like 2024-05-01") from None
    # The day after `until` must exist, and no message predates the Unix epoch.
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidRange(name, f"{name} must be a date from {FIRST_YEAR} to {LAST_YEAR}")
    return day


@dataclass
class Analytics:
    """Every figure of a range; `per_bucket` maps each bucket label to SERIES values."""

    range: DateRange
    per_bucket: dict[str, dict[str, float]]
    media_by_kind: dict[str, int]
    media_by_size: dict[str, int]
    funnel: dict[str, int]
    error_codes: list[dict[str, Any]]
    cost_by_batch: list[dict[str, Any]]
    cost_unit: str | None
    totals: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The figures as the JSON of `GET /api/stats` (added beside its older fields)."""
        return {
            "range": {
                "since": self.range.since.isoformat(),
                "until": self.range.until.isoformat(),
                "bucket": "hour" if self.range.hourly else "day",
            },
            "series": [{"date": label, **values} for label, values in self.per_bucket.items()],
            "totals": self.totals,
            "media_by_kind": self.media_by_kind,
            "media_by_size": self.media_by_size,
            "funnel": self.funnel,
            "error_codes": self.error_codes,
            "cost_by_batch": self.cost_by_batch,
            "cost_unit": self.cost_unit,
        }


def _bucket(column: Any, dialect: str, hourly: bool) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date_trunc("hour" if hourly else "day", column)
    # SQLite stores the naive-UTC column as "YYYY-MM-DD HH:MM:SS.ffffff" (SQLAlchemy's
    # DateTime format), so the day or hour is a prefix: far cheaper than strftime per row.
    return func.substr(column, 1, 13 if hourly else 10)


def _label(value: Any, hourly: bool) -> str:
    """A bucket as `DateRange.buckets()` names it: "2024-05-01" or "2024-05-01 13:00"."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:00" if hourly else "%Y-%m-%d")
    text = str(value)
    return f"{text}:00" if hourly else text


def _batch(column: ColumnClause[Any] | Any, dialect: str) -> ColumnElement[Any]:
    # Bulk rows are keyed "<batch>:<row>" (receiver.outbound.bulk.row_key).
    if dialect == "postgresql":
        position = func.strpos(column, ":")
        head = func.split_part(column, ":", 1)
    else:
        position = func.instr(column, ":")
        head = func.substr(column, 1, position - 1)
    return case((position > 1, head), else_=None)


@translate_db_errors
def analytics(index: IndexCore, rng: DateRange, *, rollups: bool = True) -> Analytics:
    """Every figure of `rng`, each from one aggregated query.

    Day-bucketed ranges read the per-day roll-ups (`receiver.index.rollups`);
    hourly ones, and `rollups=False` (the benchmark's baseline and the tests'
    cross-check), group the rows themselves. Both give the same figures.
    """
    if rollups and not rng.hourly:
        return _from_rollups(index, rng)
    return _from_rows(index, rng)


def _from_rows(index: IndexCore, rng: DateRange) -> Analytics:
    dialect = index.dialect
    received = messages.c.received_at
    created = outbound_messages.c.created_at
    in_range = (received >= rng.start, received < rng.end)
    out_range = (
        created >= rng.start,
        created < rng.end,
        outbound_messages.c.sid.is_not(None),
    )
    mb = _bucket(received, dialect, rng.hourly).label("b")
    ob = _bucket(created, dialect, rng.hourly).label("b")
    size = media.c.size_bytes
    size_bucket = case(
        (size.is_(None), None),
        *((size < bound, label) for label, bound in SIZE_BUCKETS),
        else_=LARGEST_BUCKET,
    ).label("s")
    batch = _batch(outbound_messages.c.idempotency_key, dialect).label("batch")
    # Prices are negative: the lowest sum is the dearest batch (no price counts as 0).
    batch_price = func.coalesce(func.sum(outbound_messages.c.price), 0.0)
    with index.engine.connect() as conn:
        inbound_rows = conn.execute(
            select(mb, messages.c.keyword, func.count())
            .where(*in_range)
            .group_by(mb, messages.c.keyword)
        ).all()
        price = func.sum(outbound_messages.c.price)
        outbound_rows = conn.execute(
            select(
                ob,
                outbound_messages.c.status,
                func.count(),
                price,
                func.max(outbound_messages.c.price_unit),
            )
            .where(*out_range)
            .group_by(ob, outbound_messages.c.status)
        ).all()
        media_rows = conn.execute(
            # A message's media rows are written with it (same transaction, same clock),
            # so their created_at is the message's arrival: no join needed.
            select(media.c.kind, size_bucket, func.count())
            .where(media.c.created_at >= rng.start, media.c.created_at < rng.end)
            .group_by(media.c.kind, size_bucket)
        ).all()
        error_rows = conn.execute(
            select(
                outbound_messages.c.error_code,
                func.count(),
                func.max(outbound_messages.c.error_message),
            )
            .where(*out_range, outbound_messages.c.error_code.is_not(None))
            .group_by(outbound_messages.c.error_code)
            .order_by(func.count().desc(), outbound_messages.c.error_code)
            .limit(TOP_ERRORS)
        ).all()
        batch_rows = conn.execute(
            select(batch, func.count(), batch_price)
            .where(*out_range)
            .group_by(batch)
            .order_by(batch_price, batch)
            .limit(TOP_BATCHES)
        ).all()

    per_bucket = _empty(rng)
    for label, keyword, n in inbound_rows:
        entry = per_bucket.setdefault(_label(label, rng.hourly), dict.fromkeys(SERIES, 0))
        entry["inbound"] += int(n)
        if keyword == "STOP":
            entry["opt_outs"] += int(n)
        elif keyword == "START":
            entry["opt_ins"] += int(n)
    statuses: dict[str, int] = {}
    units: set[str] = set()
    for label, status, n, price, unit in outbound_rows:
        entry = per_bucket.setdefault(_label(label, rng.hourly), dict.fromkeys(SERIES, 0))
        if unit:
            units.add(str(unit))
        entry["outbound"] += int(n)
        if status in ("delivered", "undelivered", "failed"):
            entry[status] += int(n)
        elif status == "read":
            entry["delivered"] += int(n)
        entry["cost"] = _money(entry["cost"] + _cost(price))
        statuses[str(status)] = statuses.get(str(status), 0) + int(n)
    funnel = {
        stage: sum(n for s, n in statuses.items() if not members or s in members)
        for stage, members in FUNNEL.items()
    }
    kinds: dict[str, int] = {}
    sizes = {label: 0 for label, _ in SIZE_BUCKETS} | {LARGEST_BUCKET: 0}
    for kind, label, n in media_rows:
        if kind is not None:
            kinds[str(kind)] = kinds.get(str(kind), 0) + int(n)
        if label is not None:
            sizes[str(label)] += int(n)
    return _assemble(
        rng,
        per_bucket,
        kinds,
        sizes,
        funnel,
        error_rows,
        [(name, int(n), _cost(price)) for name, n, price in batch_rows],
        sorted(units),
    )


def _empty(rng: DateRange) -> dict[str, dict[str, float]]:
    return {label: dict.fromkeys(SERIES, 0) for label in rng.buckets()}


def _totals(per_bucket: dict[str, dict[str, float]]) -> dict[str, float]:
    totals = {name: 0.0 for name in SERIES}
    for values in per_bucket.values():
        for name in SERIES:
            totals[name] += values[name]
    return {k: (_money(v) if k == "cost" else int(v)) for k, v in totals.items()}


_OUT_FIGURES = ("outbound", "sent", "delivered", "undelivered", "failed", "price_micros")


def _from_rollups(index: IndexCore, rng: DateRange) -> Analytics:
    """The figures of a day-bucketed range from the per-day roll-ups."""
    first, last = rng.since.isoformat(), rng.until.isoformat()
    created = outbound_messages.c.created_at
    with index.engine.connect() as conn:
        i, o = daily_inbound.c, daily_outbound.c
        figures = ("inbound", "opt_outs", "opt_ins", *_OUT_FIGURES)
        both = union_all(
            select(i.day, *(i[f] if f in i else literal(0).label(f) for f in figures)).where(
                i.day >= first, i.day <= last
            ),
            select(o.day, *(o[f] if f in o else literal(0).label(f) for f in figures)).where(
                o.day >= first, o.day <= last
            ),
        ).subquery("days")
        # One row per day with both directions' sums: half the rows a query per direction
        # gives (parts summed too). The ranges are read from each table's key.
        day_rows = conn.execute(
            select(both.c[0], *(func.sum(c) for c in list(both.c)[1:])).group_by(both.c[0])
        ).all()
        units = sorted(
            str(u)
            for (u,) in conn.execute(
                select(o.unit).where(o.day >= first, o.day <= last, o.unit != "").group_by(o.unit)
            )
        )
        m = daily_media.c
        media_rows = conn.execute(
            select(m.kind, func.sum(m["items"]), *(func.sum(m[f"size{n}"]) for n in range(4)))
            .where(m.day >= first, m.day <= last)
            .group_by(m.kind)
        ).all()
        # Failed sends are few: their codes are read from the rows (the created_at index).
        error_rows = conn.execute(
            select(
                outbound_messages.c.error_code,
                func.count(),
                func.max(outbound_messages.c.error_message),
            )
            .where(
                created >= rng.start,
                created < rng.end,
                outbound_messages.c.sid.is_not(None),
                outbound_messages.c.error_code.is_not(None),
            )
            .group_by(outbound_messages.c.error_code)
            .order_by(func.count().desc(), outbound_messages.c.error_code)
            .limit(TOP_ERRORS)
        ).all()
        b = daily_batches.c
        price = func.sum(b.price_micros)
        batch_rows = conn.execute(
            select(b.batch, func.sum(b.messages), price)
            .where(b.day >= first, b.day <= last)
            .group_by(b.batch)
            .order_by(price, b.batch)
            .limit(TOP_BATCHES)
        ).all()

    per_bucket = _empty(rng)
    funnel = dict.fromkeys(FUNNEL, 0)
    for day, n_in, stops, starts, n, sent, delivered, undelivered, failed, micros in day_rows:
        entry = per_bucket.get(day) or per_bucket.setdefault(day, dict.fromkeys(SERIES, 0))
        entry["inbound"] += int(n_in)
        entry["opt_outs"] += int(stops)
        entry["opt_ins"] += int(starts)
        entry["outbound"] += int(n)
        entry["delivered"] += int(delivered)
        entry["undelivered"] += int(undelivered)
        entry["failed"] += int(failed)
        if micros:
            entry["cost"] = _money(entry["cost"] + _cost(int(micros) / MICROS))
        for stage, count in (
            ("queued", n),
            ("sent", sent),
            ("delivered", delivered),
            ("undelivered", undelivered),
            ("failed", failed),
        ):
            funnel[stage] += int(count)
    kinds: dict[str, int] = {}
    sizes = {label: 0 for label, _ in SIZE_BUCKETS} | {LARGEST_BUCKET: 0}
    labels = [label for label, _ in SIZE_BUCKETS] + [LARGEST_BUCKET]
    for kind, n, *per_size in media_rows:
        if kind and int(n):
            kinds[str(kind)] = kinds.get(str(kind), 0) + int(n)
        for label, count in zip(labels, per_size, strict=True):
            sizes[label] += int(count or 0)
    return _assemble(
        rng,
        per_bucket,
        kinds,
        sizes,
        funnel,
        error_rows,
        [(name, int(n), _cost(int(micros) / MICROS)) for name, n, micros in batch_rows if int(n)],
        list(units),
    )


def _assemble(
    rng: DateRange,
    per_bucket: dict[str, dict[str, float]],
    kinds: dict[str, int],
    sizes: dict[str, int],
    funnel: dict[str, int],
    error_rows: Any,
    batches: list[tuple[str | None, int, float]],
    units: list[str],
) -> Analytics:
    """The report from its parts, however they were counted (rows or roll-ups)."""
    return Analytics(
        range=rng,
        per_bucket=per_bucket,
        media_by_kind=dict(sorted(kinds.items())),
        media_by_size=sizes,
        funnel=funnel,
        error_codes=_error_codes(error_rows),
        cost_by_batch=[
            {"batch": name or SINGLE_SENDS, "messages": n, "cost": _money(cost)}
            for name, n, cost in batches
        ],
        cost_unit="/".join(units) or None,
        totals=_totals(per_bucket),
    )


def _error_codes(rows: Any) -> list[dict[str, Any]]:
    """Error codes with their counts and Twilio's descriptions, as the rows give them."""
    return [
        {"code": int(code), "count": int(n), "description": describe(int(code), message)}
        for code, n, message in rows
    ]


def _cost(price: Any) -> float:
    # Twilio reports what it charged as a negative price; a cost is positive.
    return -float(price) if price is not None else 0.0


def _money(value: float) -> float:
    return round(value, 5) + 0.0
