"""Twilio's short descriptions of the error codes outbound messages end with.

Each code is explained at https://www.twilio.com/docs/api/errors/<code> (for
example https://www.twilio.com/docs/api/errors/30007). Twilio notes that causes
change over time, so these are labels for people, never inputs to logic.
"""

from __future__ import annotations

DESCRIPTIONS: dict[int, str] = {
    11200: "HTTP retrieval failure",
    11751: "Media exceeds messaging provider size limit",
    12300: "Invalid Content-Type",
    20003: "Permission denied (authentication failed)",
    20429: "Too many requests",
    21211: "Invalid 'To' phone number",
    21266: "'To' and 'From' are the same",
    21606: "'From' is not a valid message-capable Twilio number for this destination",
    21608: "'To' is not verified (trial account)",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "'From' has exceeded the maximum of queued messages",
    21612: "Cannot route a message between this 'To' and 'From'",
    21614: "'To' is not a valid mobile number",
    21617: "Concatenated message body exceeds the 1600 character limit",
    21620: "Invalid media URL(s)",
    21623: "Number of media files exceeds the limit (10)",
    21635: "'To' is a landline",
    21658: "Parameter exceeded character limit",
    21659: "'From' is not a Twilio number",
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered (carrier violation)",
    30008: "Unknown error",
    30019: "Content size exceeds carrier limit",
    30034: "Message from an unregistered number (US A2P 10DLC)",
}


def describe(code: int | None, fallback: str | None = None) -> str:
    """Twilio's description of `code`, else what Twilio sent with it, else a plain label."""
    if code is not None and code in DESCRIPTIONS:
        return DESCRIPTIONS[code]
    return fallback or "Unknown error code"
