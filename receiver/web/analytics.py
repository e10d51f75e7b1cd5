"""The /analytics page: delivery and traffic figures as server-side SVG charts (thin view).

The figures come from `receiver.index.analytics`; `GET /api/stats` serves the
same ones as JSON and CSV (`receiver.web.outbound_api`).
"""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Flask, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from receiver.index.analytics import SERIES, Analytics, InvalidRange, analytics, parse_range
from receiver.web import charts
from receiver.web.hooks import services

bp = Blueprint("analytics", __name__)


def register(app: Flask) -> None:
    """Add the page."""
    app.register_blueprint(bp)


def figures(since: str | None, until: str | None) -> Analytics:
    """The figures of a range given as query parameters; InvalidRange when unusable."""
    return analytics(services().index, parse_range(since, until))


def to_csv(result: Analytics) -> str:
    """One row per hour or day: a `date` column, then one column per figure of SERIES."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("date", *SERIES))
    for label, values in result.per_bucket.items():
        writer.writerow((label, *(_cell(values[name]) for name in SERIES)))
    return out.getvalue()


def _cell(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.5f}".rstrip("0")


@bp.get("/analytics")
def page() -> ResponseReturnValue:
    """Every chart of the chosen range (the last 30 days by default)."""
    since, until = request.args.get("since"), request.args.get("until")
    try:
        result = figures(since, until)
    except InvalidRange as exc:
        return render_template("analytics.html", error=exc.message, since=since, until=until), 400
    rng = result.range
    first, last = rng.since.isoformat(), rng.until.isoformat()
    return render_template(
        "analytics.html",
        error=None,
        since=first,
        until=last,
        result=result,
        charts=_charts(result),
        csv_url=url_for("outbound_api.stats", since=first, until=last, format="csv"),
        json_url=url_for("outbound_api.stats", since=first, until=last),
    )


def _charts(result: Analytics) -> list[tuple[str, Markup]]:
    per = "hour" if result.range.hourly else "day"
    unit = result.cost_unit or "no price yet"
    labels = list(result.per_bucket)

    def over_time(chart_id: str, title: str, *names: tuple[str, str]) -> Markup:
        series = [
            charts.Series(shown, [v[name] for v in result.per_bucket.values()])
            for name, shown in names
        ]
        return charts.columns(chart_id, title, labels, series)

    errors = [(f"{e['code']} {e['description']}", e["count"]) for e in result.error_codes]
    return [
        (
            "Messages",
            over_time(
                "chart-messages",
                f"Inbound and outbound messages per {per}",
                ("inbound", "inbound"),
                ("outbound", "outbound"),
            ),
        ),
        (
            "Delivery funnel",
            charts.bars("chart-funnel", "Outbound delivery funnel", list(result.funnel.items())),
        ),
        ("Error codes", charts.bars("chart-errors", "Outbound error codes", errors)),
        (
            "Media by kind",
            charts.bars("chart-kinds", "Inbound media by kind", list(result.media_by_kind.items())),
        ),
        (
            "Media by size",
            charts.bars("chart-sizes", "Inbound media by size", list(result.media_by_size.items())),
        ),
        (
            "Opt-outs and opt-ins",
            over_time(
                "chart-optouts",
                f"Opt-outs (STOP) and opt-ins (START) per {per}",
                ("opt_outs", "opt-outs"),
                ("opt_ins", "opt-ins"),
            ),
        ),
        ("Cost", over_time("chart-cost", f"Cost per {per} ({unit})", ("cost", "cost"))),
        (
            "Cost by batch",
            charts.bars(
                "chart-batches",
                f"Cost by bulk batch ({unit})",
                [(b["batch"], b["cost"]) for b in result.cost_by_batch],
            ),
        ),
    ]
