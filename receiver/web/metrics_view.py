"""`GET /metrics` (Prometheus text) and the counting of webhook answers."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, g, request

from receiver.metrics import WEBHOOK_STATUS_OUTCOMES, Metrics
from receiver.web.hooks import services

bp = Blueprint("metrics", __name__)

INBOUND_PATH = "/twilio/messaging"
STATUS_PATH = "/twilio/status"


def metrics() -> Metrics:
    """This process's metrics (built with the services)."""
    return services().metrics


@bp.get("/metrics")
def scrape() -> Response:
    """Prometheus text: every worker's counters plus the backlog read from the index now."""
    svc = services()
    body, content_type = svc.metrics.render(svc.index, svc.outbound_index)
    resp = Response(body, content_type=content_type)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def webhook_outcome(status: int) -> str:
    """The outcome label of an inbound webhook answer, when the view did not name one."""
    if status in WEBHOOK_STATUS_OUTCOMES:
        return WEBHOOK_STATUS_OUTCOMES[status]
    if 200 <= status < 300:
        return "accepted"
    if status >= 500:
        return "error"
    return "rejected"


def _count(response: Response) -> Response:
    """After each request: count webhook answers and verified outbound status callbacks."""
    if request.method != "POST" and request.path != INBOUND_PATH:
        return response
    if request.path == INBOUND_PATH:
        # The view may say more than the status (recorded, duplicate, keyword).
        outcome = g.get("webhook_outcome") if response.status_code == 200 else None
        metrics().webhook(outcome or webhook_outcome(response.status_code))
    elif request.path == STATUS_PATH and 200 <= response.status_code < 300:
        status = request.form.get("MessageStatus") or request.form.get("SmsStatus") or "unknown"
        metrics().outbound_status(status)
    return response


def register(app: Flask) -> None:
    """Add `/metrics` and count webhook answers for `app`."""
    app.register_blueprint(bp)
    app.after_request(_count)
