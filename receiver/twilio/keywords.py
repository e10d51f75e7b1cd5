"""Twilio's default opt-out, opt-in and help keywords, recognised the way Twilio does."""

from __future__ import annotations

from typing import Literal

Keyword = Literal["STOP", "START", "HELP"]

STOP_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

_BY_WORD: dict[str, Keyword] = {
    **{word: "STOP" for word in STOP_KEYWORDS},
    **{word: "START" for word in START_KEYWORDS},
    **{word: "HELP" for word in HELP_KEYWORDS},
}


def classify_keyword(body: str, opt_out_type: str | None) -> Keyword | None:
    """STOP, START or HELP when the message is one of those keywords, else None."""
    if opt_out_type:
        # Advanced Opt-Out has already matched the service's own (possibly custom) keywords.
        declared = opt_out_type.strip().upper()
        if declared in ("STOP", "START", "HELP"):
            return _BY_WORD[declared]
    word = body.strip()
    # Twilio matches the whole body, case-insensitively, in plain ASCII only: "STOP please"
    # and look-alike letters are ordinary messages that Twilio does not act on either.
    if not word.isascii():
        return None
    return _BY_WORD.get(word.upper())
