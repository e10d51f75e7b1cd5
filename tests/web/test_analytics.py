"""/analytics and `GET /api/stats`: charts, JSON and CSV of the same figures, bad input."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from receiver.index.analytics import SERIES
from tests.conftest import AUTH
from tests.support.traffic import seed
from tests.support.webhooks import WebhookPoster, inbound_params
from tests.web.conftest import login

RANGE = {"since": "2024-05-01", "until": "2024-05-04"}
CHART_IDS = (
    "chart-messages",
    "chart-funnel",
    "chart-errors",
    "chart-kinds",
    "chart-sizes",
    "chart-optouts",
    "chart-cost",
    "chart-batches",
)


@pytest.fixture
def seeded(app: Any) -> Any:
    seed(app.extensions["receiver"].index.engine)
    return app.test_client()


def stats(client: Any, **params: str) -> Any:
    return client.get("/api/stats", query_string=params, headers=AUTH)


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_json_and_csv_carry_the_same_figures(seeded: Any) -> None:
    data = stats(seeded, **RANGE).get_json()
    resp = stats(seeded, **RANGE, format="csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = rows_of(resp.get_data(as_text=True))
    assert list(rows[0]) == ["date", *SERIES]
    assert [r["date"] for r in rows] == [s["date"] for s in data["series"]]
    assert len(rows) == 4 and data["range"] == {**RANGE, "bucket": "day"}
    for row, entry in zip(rows, data["series"], strict=True):
        for name in SERIES:
            assert float(row[name]) == pytest.approx(entry[name]), (row["date"], name)
    for name in SERIES:
        assert sum(float(r[name]) for r in rows) == pytest.approx(data["totals"][name])
    # The funnel and the series count the same messages.
    assert data["funnel"]["queued"] == data["totals"]["outbound"]
    assert data["funnel"]["failed"] == data["totals"]["failed"]
    assert data["totals"]["inbound"] > 0 and data["totals"]["cost"] > 0
    assert data["cost_unit"] == "USD"


def test_the_older_fields_are_unchanged(seeded: Any) -> None:
    data = stats(seeded, days="3660").get_json()
    outbound = data["outbound"]
    assert set(outbound) == {"total", "by_status", "by_error_code", "by_day"}
    assert outbound["total"] == sum(outbound["by_status"].values())
    assert outbound["by_error_code"]["30007"] == 2
    # A short range is counted per hour.
    hourly = stats(seeded, since="2024-05-01", until="2024-05-01").get_json()
    assert hourly["range"]["bucket"] == "hour" and len(hourly["series"]) == 24


def test_inbound_counts_every_accepted_webhook_stop_included(app: Any, client: Any) -> None:
    poster = WebhookPoster(client)
    bodies = ["hello", "STOP", "START", "stop", "HELP"]
    for body in bodies:
        assert poster.post(inbound_params(body=body)).status_code == 200
    today = datetime.now(UTC).date().isoformat()
    data = stats(client, since=today, until=today).get_json()
    assert data["totals"]["inbound"] == len(bodies)
    assert data["totals"]["opt_outs"] == 2 and data["totals"]["opt_ins"] == 1


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"since": "2024-05-05", "until": "2024-05-01"}, "since"),
        ({"since": "May 1"}, "since"),
        ({"until": "2024-13-01"}, "until"),
        ({"since": "1990-01-01", "until": "2024-01-01"}, "since"),
        ({"format": "xml"}, "format"),
        ({"since": "9999-12-30", "until": "9999-12-31"}, "since"),
    ],
)
def test_bad_ranges_are_refused_with_the_reason(
    client: Any, params: dict[str, str], parameter: str
) -> None:
    resp = stats(client, **params)
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["parameter"] == parameter and body["message"]


def test_stats_needs_the_token(client: Any) -> None:
    assert client.get("/api/stats", query_string=RANGE).status_code == 401


def test_the_page_draws_every_chart_with_a_title_and_links_its_numbers(seeded: Any) -> None:
    resp = seeded.get("/analytics", query_string=RANGE)
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    login(seeded, next_path="/analytics")
    html = seeded.get("/analytics", query_string=RANGE).get_data(as_text=True)
    for chart_id in CHART_IDS:
        svg = re.search(rf'<svg id="{chart_id}"[^>]*aria-label="([^"]+)"[^>]*><title>([^<]+)', html)
        assert svg, chart_id
        assert svg.group(1).startswith(svg.group(2))  # the summary opens with the title
    assert "30007 Message filtered (carrier violation)" in html
    assert 'href="/api/stats?since=2024-05-01&amp;until=2024-05-04&amp;format=csv"' in html
    assert 'value="2024-05-01"' in html and 'value="2024-05-04"' in html
    # The funnel's summary carries the figures a screen reader needs.
    data = stats(seeded, **RANGE).get_json()
    funnel = re.search(r'<svg id="chart-funnel"[^>]*aria-label="([^"]+)"', html)
    assert funnel
    for stage, n in data["funnel"].items():
        assert f"{stage}: {n}" in funnel.group(1)


def test_the_page_explains_a_bad_range(seeded: Any) -> None:
    login(seeded, next_path="/analytics")
    resp = seeded.get("/analytics", query_string={"since": "2024-05-09", "until": "2024-05-01"})
    assert resp.status_code == 400
    assert "since must be on or before until" in resp.get_data(as_text=True)


def test_text_from_twilio_is_escaped_in_charts(app: Any) -> None:
    from sqlalchemy import update

    from receiver.index.schema import outbound_messages

    seed(app.extensions["receiver"].index.engine)
    with app.extensions["receiver"].index.engine.begin() as conn:
        conn.execute(
            update(outbound_messages)
            .where(outbound_messages.c.error_code == 30003)
            .values(error_code=39999, error_message='<script>alert("x")</script>')
        )
    client = app.test_client()
    login(client, next_path="/analytics")
    html = client.get("/analytics", query_string=RANGE).get_data(as_text=True)
    assert "<script>" not in html
    assert "39999 &lt;script&gt;" in html
