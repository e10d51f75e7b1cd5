"""Health, readiness and metrics routes for load balancers and monitoring."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from receiver.errors import IndexUnavailable, StorageError
from receiver.media.scan import ScanUnavailable
from receiver.web.hooks import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: the index and the object store are reachable."""
    svc = services()
    problems = {}
    try:
        svc.index.ping()
    except IndexUnavailable as exc:
        problems["index"] = str(exc)
    try:
        svc.store.check()
    except StorageError as exc:
        problems["storage"] = str(exc)
    extra = {}
    scanner = svc.pipeline.scanner
    if scanner is not None:
        # clamd being down does not stop webhooks (files wait for it), so it is reported
        # here without making the process unready.
        try:
            extra["clamd"] = {"status": "ok", "version": scanner.client.version()}
        except ScanUnavailable as exc:
            extra["clamd"] = {"status": "unavailable", "error": str(exc)}
    if problems:
        return jsonify(status="unavailable", problems=problems, **extra), 503
    return jsonify(status="ready", **extra), 200
