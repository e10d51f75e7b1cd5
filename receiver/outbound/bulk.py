"""Bulk sends (CSV campaigns): many messages, each under its own idempotency key.

`read_campaign` turns a CSV into requests; `BulkSender` sends them. A row whose
`to` is a Conversation SID (CH…) is sent into that conversation (group MMS) through
the conversation send core, with the row's `author`.

A row's key is derived from the batch and its content (`row_key`), so running
the same campaign again sends only what did not go the first time.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from receiver.errors import ConfigError, OutboundError, TwilioApiError
from receiver.outbound.conversation import ConversationSender
from receiver.outbound.prepare import PreparedMessage
from receiver.outbound.request import OutboundRequest, is_conversation_sid, mask_number
from receiver.outbound.send import REJECTING_STATUSES, Sender, SendResult
from receiver.twilio.rest import TwilioRestError

#: Separates several media in a CSV cell.
MEDIA_SEPARATOR = "|"
#: Called after each row: the request, its result or the error that stopped it.
RowCallback = Callable[[OutboundRequest, SendResult | None, Exception | None], None]


@dataclass
class BulkSummary:
    """Counts of a bulk send, plus one line per row that did not go."""

    sent: int = 0
    already_sent: int = 0
    refused: int = 0
    failed: int = 0
    aborted: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every row went (now or in an earlier run)."""
        return not (self.refused or self.failed or self.aborted)


def row_key(batch: str, to: str, sender: str, body: str, media: Sequence[str]) -> str:
    """The idempotency key of a bulk row: same batch, recipient and content -> same key."""
    digest = hashlib.sha256(repr((to, sender, body, tuple(media))).encode()).hexdigest()[:24]
    return f"{batch}:{digest}"


def campaign_name(path: Path) -> str:
    """The default batch name of a CSV: the same file (by its full path) -> the same name."""
    return "csv-" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]


def read_campaign(path: Path, template: OutboundRequest, batch: str) -> list[OutboundRequest]:
    """One request per CSV row with a 'to'; `template` gives defaults for missing columns.

    Columns: to (required: a number, or a Conversation SID CH…), body, media
    (``|``-separated), from, messaging_service_sid, author (conversation rows), key.
    ValueError names the file and what is wrong.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = {f.strip().lower() for f in reader.fieldnames or ()}
            if "to" not in fields:
                raise ValueError(
                    f"{path}: the first line must name the columns and include 'to' "
                    "(optional: body, media, from, messaging_service_sid, author, key)"
                )
            rows = [
                {(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read the CSV ({exc})") from None
    requests = [_row_request(row, template, batch) for row in rows if row.get("to")]
    if not requests:
        raise ValueError(f"{path}: no rows with a 'to' value")
    return requests


def _row_request(row: dict[str, str], template: OutboundRequest, batch: str) -> OutboundRequest:
    media = (
        tuple(m.strip() for m in row["media"].split(MEDIA_SEPARATOR) if m.strip())
        if row.get("media")
        else template.media
    )
    from_ = row.get("from") or template.from_
    service = row.get("messaging_service_sid") or template.messaging_service_sid
    body = row.get("body") or template.body
    if is_conversation_sid(row["to"]):
        author = row.get("author") or template.author
        return replace(
            template,
            to="",
            conversation_sid=row["to"],
            author=author,
            from_=None,
            messaging_service_sid=None,
            body=body,
            media=media,
            idempotency_key=f"{batch}:{row['key']}"
            if row.get("key")
            else row_key(batch, row["to"], author or "", body, media),
        )
    key = (
        f"{batch}:{row['key']}"
        if row.get("key")
        else row_key(batch, row["to"], from_ or service or "", body, media)
    )
    return replace(
        template,
        to=row["to"],
        from_=from_,
        messaging_service_sid=service,
        body=body,
        media=media,
        idempotency_key=key,
    )


class BulkSender:
    """Sends a campaign row by row through one `Sender` (conversation rows through the
    `ConversationSender`), counting what happened."""

    def __init__(self, sender: Sender, conversation: ConversationSender | None = None) -> None:
        self.sender = sender
        self.conversation = conversation

    def _send(
        self, request: OutboundRequest, cache: dict[Any, PreparedMessage], wait: bool
    ) -> SendResult:
        if request.conversation_sid is None:
            return self.sender.send(request, cache=cache, wait_in_flight=wait)
        if self.conversation is None:
            raise OutboundError("this workflow cannot send into conversations", "not_configured")
        return self.conversation.send(request, wait_in_flight=wait)

    def send_bulk(
        self,
        requests: Iterable[OutboundRequest],
        *,
        on_row: RowCallback | None = None,
    ) -> BulkSummary:
        """Send many messages, each under its own idempotency key; safe to run again.

        Rows already sent are skipped, refused rows are reported and the run
        goes on; a problem that would fail every row (credentials, Twilio
        unreachable or throttling after retries) stops the run, and running it
        again later continues where it stopped.
        """
        summary = BulkSummary()
        cache: dict[Any, PreparedMessage] = {}
        deferred: list[OutboundRequest] = []
        for request in requests:
            if not self._bulk_row(request, summary, cache, on_row, deferred):
                return summary
        # Rows whose earlier attempt may still be reaching Twilio: settled last, after waiting.
        for request in deferred:
            if not self._bulk_row(request, summary, cache, on_row, None):
                break
        return summary

    def _bulk_row(
        self,
        request: OutboundRequest,
        summary: BulkSummary,
        cache: dict[Any, PreparedMessage],
        on_row: RowCallback | None,
        deferred: list[OutboundRequest] | None,
    ) -> bool:
        """Send one row and count it; False when the run must stop."""
        result: SendResult | None = None
        error: Exception | None = None
        try:
            result = self._send(request, cache, deferred is None)
        except (OutboundError, TwilioApiError, ConfigError) as exc:
            if (
                deferred is not None
                and isinstance(exc, OutboundError)
                and (exc.reason == "in_flight")
            ):
                deferred.append(request)
                return True
            error = exc
        if result is not None:
            if result.duplicate:
                summary.already_sent += 1
            else:
                summary.sent += 1
        elif isinstance(error, OutboundError) or (
            isinstance(error, TwilioRestError) and error.status in REJECTING_STATUSES
        ):
            summary.refused += 1
            summary.problems.append(f"{_target(request)}: {error}")
        else:
            summary.failed += 1
            summary.aborted = str(error)
            summary.problems.append(f"{_target(request)}: {error}")
        if on_row is not None:
            on_row(request, result, error)
        return summary.aborted is None


def _target(request: OutboundRequest) -> str:
    """Who a row goes to, as a problem line names it (numbers masked)."""
    return request.conversation_sid or mask_number(request.to)
