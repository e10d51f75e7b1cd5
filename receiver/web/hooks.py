"""Twilio webhooks: inbound messages and outbound status callbacks (thin views)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, g, jsonify, request

from receiver.errors import TwilioApiError, WebhookError
from receiver.services import Services
from receiver.twilio.twiml import empty_response
from receiver.twilio.webhook import (
    CONVERSATION_EVENTS,
    conversation_event_type,
    parse_cloud_events,
    parse_conversation_event,
    parse_inbound,
)
from receiver.web.twilio_request import read_verified, read_verified_json

log = logging.getLogger(__name__)
bp = Blueprint("hooks", __name__)

TWIML = "application/xml"


def services() -> Services:
    """The services of the running app."""
    svc: Services = current_app.extensions["receiver"]
    return svc


@bp.route("/twilio/messaging", methods=["POST", "GET"])
def messaging() -> Response:
    """Inbound SMS/MMS: verify, record, fetch media within the deadline, answer TwiML."""
    svc = services()
    verified = read_verified(request, svc)
    try:
        msg = parse_inbound(verified.params)
    except WebhookError as exc:
        log.warning("malformed inbound webhook: %s", exc)
        abort(400, description=str(exc))
    result = svc.pipeline.ingest(msg)
    g.webhook_outcome = (
        "keyword"
        if result.keyword in ("STOP", "START")
        else ("recorded" if result.created else "duplicate")
    )
    svc.pipeline.process_message(
        msg.message_sid, deadline=svc.settings.inline_deadline, ingested=result
    )
    if result.keyword in ("STOP", "START"):
        # Twilio answers opt-out keywords itself; a reply here would be dropped or doubled.
        xml = empty_response()
    else:
        message = svc.index.get_message(msg.message_sid)
        name = "help.txt" if result.keyword == "HELP" else "message.txt"
        xml = svc.replies.twiml(name, **svc.replies.context(message))
    log.info(
        "inbound %s from %s: %s, %d media",
        msg.message_sid,
        msg.from_.channel,
        "recorded" if result.created else "duplicate",
        msg.num_media,
        extra={"message_sid": msg.message_sid},
    )
    return _twiml(xml)


@bp.post("/twilio/status")
def status() -> Response:
    """Outbound status callback: verified, stored, status only moves forward."""
    svc = services()
    verified = read_verified(request, svc)
    try:
        svc.outbound.handle_status(verified.params)
    except WebhookError as exc:
        abort(400, description=str(exc))
    return Response(status=204)


def _twiml(xml: bytes) -> Response:
    return Response(xml, status=200, mimetype=TWIML)


#: Unknown Conversations event types already logged by this process (each is logged once).
_UNKNOWN_EVENTS: set[str] = set()


@bp.post("/twilio/conversations")
def conversations() -> Response:
    """Conversations post-event webhook: verified, recorded, answered at once (media later)."""
    svc = services()
    verified = read_verified(request, svc)
    try:
        event_type = conversation_event_type(verified.params) or ""
        if event_type not in CONVERSATION_EVENTS:
            if event_type[:64] not in _UNKNOWN_EVENTS and len(_UNKNOWN_EVENTS) < 256:
                _UNKNOWN_EVENTS.add(event_type[:64])
                log.info("ignoring Conversations event type %r (not kept)", event_type[:64])
            return Response(status=200)
        event = parse_conversation_event(verified.params)
        outcome = svc.conversations.handle(event)
    except WebhookError as exc:
        log.warning("malformed Conversations webhook: %s", exc)
        abort(400, description=str(exc))
    g.webhook_outcome = outcome.result
    log.info(
        "conversations %s %s: %s",
        event.event_type,
        event.message_sid or event.participant_sid or event.conversation_sid,
        outcome.result,
        extra={"message_sid": event.message_sid} if event.message_sid else None,
    )
    return Response(status=200)


@bp.post("/twilio/events")
def events() -> Response:
    """Event Streams sink: signed CloudEvents (one or a batch), each applied once by id."""
    svc = services()
    payload = read_verified_json(request, svc)
    try:
        batch = parse_cloud_events(payload)
    except WebhookError as exc:
        log.warning("malformed Event Streams delivery: %s", exc)
        abort(400, description=str(exc))
    try:
        result = svc.streams.handle(batch)
    except TwilioApiError as exc:
        # Twilio's REST API failed while filling in a missed message: a retry may cure it.
        log.warning("Event Streams delivery not finished: %s", exc)
        abort(503, description="Twilio's REST API failed; retry later")
    g.webhook_outcome = "recorded" if result.applied or result.kept else "duplicate"
    log.info(
        "event stream: %d events, %d duplicates, %d applied, %d kept, %d errors",
        result.received,
        result.duplicates,
        result.applied,
        result.kept,
        result.errors,
    )
    return jsonify(
        received=result.received,
        duplicates=result.duplicates,
        applied=result.applied,
        kept=result.kept,
        errors=result.errors,
    )
