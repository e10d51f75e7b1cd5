"""`/events`: the browser page of endpoints, recent deliveries and failures, with replay."""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue

from receiver.web.events_api import ENDPOINT_ID, EVENT_ID
from receiver.web.hooks import services

bp = Blueprint("events_page", __name__)


@bp.get("/events")
def events() -> ResponseReturnValue:
    """Endpoints with their state and backlog, the latest deliveries, and failed ones."""
    index = services().index
    figures = index.event_figures()
    return render_template(
        "events.html",
        endpoints=index.list_endpoints(),
        backlog=figures.backlog_by_endpoint,
        recent=index.recent_deliveries(50),
        failed=index.recent_deliveries(50, state="failed"),
        oldest=figures.oldest_undelivered,
    )


@bp.post("/events/<event_id>/replay/<endpoint_id>")
def replay(event_id: str, endpoint_id: str) -> ResponseReturnValue:
    """Deliver one event to one endpoint again (CSRF-checked form)."""
    if not EVENT_ID.match(event_id) or not ENDPOINT_ID.match(endpoint_id):
        flash("No such event or endpoint.")
    elif services().events.replay(endpoint_id, event_id=event_id):
        flash(f"{event_id} is due again to {endpoint_id}.")
    else:
        flash("No such event or endpoint.")
    return redirect(url_for("events_page.events"), code=303)


def register(app: Flask) -> None:
    """Add the page."""
    app.register_blueprint(bp)
