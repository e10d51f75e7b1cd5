"""Twilio's resource identifiers, written once.

A SID is a two-letter prefix naming the resource type followed by 32
hexadecimal digits (https://www.twilio.com/docs/glossary/what-is-a-sid).
SIDs end up in storage keys, file names, URLs and logs, so only that exact
shape is accepted: match with `fullmatch`.
"""

from __future__ import annotations

import re

__all__ = [
    "ACCOUNT",
    "CHAT_SERVICE",
    "CONVERSATION",
    "CONVERSATION_MESSAGE",
    "MEDIA",
    "MESSAGE",
    "MESSAGING_SERVICE",
    "PARTICIPANT",
    "RECEIPT",
    "sid_pattern",
]


def sid_pattern(*prefixes: str) -> re.Pattern[str]:
    """A SID with one of `prefixes`, unanchored (use `fullmatch`, or embed `.pattern`)."""
    return re.compile(f"(?:{'|'.join(prefixes)})[0-9a-fA-F]{{32}}")


ACCOUNT = sid_pattern("AC")
#: A Programmable Messaging message: SM (SMS) or MM (MMS).
MESSAGE = sid_pattern("SM", "MM")
MESSAGING_SERVICE = sid_pattern("MG")
MEDIA = sid_pattern("ME")
CONVERSATION = sid_pattern("CH")
CHAT_SERVICE = sid_pattern("IS")
#: A message of a conversation.
CONVERSATION_MESSAGE = sid_pattern("IM")
PARTICIPANT = sid_pattern("MB")
#: A per-participant delivery receipt of a conversation message.
RECEIPT = sid_pattern("DY")
