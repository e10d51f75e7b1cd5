"""What a caller asks to send: `OutboundRequest`, its validation, and small text rules.

Everything here is pure: no index, storage or network. The CLI and the web
API build an `OutboundRequest`; `validate_request` refuses what Twilio would
refuse, naming the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from receiver.errors import OutboundError
from receiver.media.policy import Policy, check_count, mms_policy, whatsapp_policy
from receiver.twilio import sids

MAX_BODY = 1600
#: Twilio carries MMS only to US and Canadian numbers, which share the country code +1;
#: elsewhere the message goes as SMS. https://support.twilio.com/hc/en-us/articles/223133707
MMS_PREFIXES = ("+1",)

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_CHANNEL_ADDRESS = re.compile(r"(whatsapp|messenger|rcs):\S{3,}")
_SHORT_CODE = re.compile(r"[0-9]{3,8}")
_ALPHANUMERIC = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")

_JSON_FIELDS = frozenset(
    {
        "to",
        "from",
        "messaging_service_sid",
        "body",
        "media",
        "fallback",
        "carrier_budget",
        "validity_period",
        "idempotency_key",
        "dry_run",
        "conversation",
        "author",
    }
)


@dataclass(frozen=True)
class OutboundRequest:
    """What to send: one message to one recipient (the CLI's and the API's arguments)."""

    to: str
    from_: str | None = None
    messaging_service_sid: str | None = None
    body: str = ""
    #: Local file paths or http(s) URLs.
    media: tuple[str, ...] = ()
    #: None: refuse media MMS cannot carry; "link": send an SMS with links to it instead.
    fallback: str | None = None
    #: A carrier's byte budget for the whole message (e.g. 600_000); None: Twilio's 5 MB.
    carrier_budget: int | None = None
    validity_period: int | None = None
    idempotency_key: str | None = None
    #: Whether local file paths are allowed (the CLI: yes; the web API: never).
    allow_files: bool = True
    #: Send into this Conversation (CH…) instead of to `to`; every participant receives it.
    conversation_sid: str | None = None
    #: The Conversations message's Author (Twilio's default: "system").
    author: str | None = None

    @property
    def sender(self) -> str:
        """The sender the rate limit and opt-outs are keyed on."""
        return self.from_ or self.messaging_service_sid or ""

    @classmethod
    def from_json(cls, data: Any, *, idempotency_key: str | None = None) -> OutboundRequest:
        """A request from the API's JSON object; ValueError names the field that is wrong.

        Media must be http(s) URLs: the API never reads files of the server.
        """
        if not isinstance(data, dict):
            raise ValueError('send a JSON object such as {"to": "+1...", "from": ...}')
        unknown = set(data) - _JSON_FIELDS
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")

        def text(name: str) -> str | None:
            value = data.get(name)
            if value is None:
                return None
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            return value.strip() or None

        body = data.get("body", "")
        if body is None:
            body = ""
        if not isinstance(body, str):
            raise ValueError("body must be a string")
        media = data.get("media") or []
        if not isinstance(media, list) or not all(isinstance(m, str) for m in media):
            raise ValueError("media must be a list of http(s) URLs")
        budget = data.get("carrier_budget")
        if isinstance(budget, str):
            budget = parse_size(budget)
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
            raise ValueError("carrier_budget must be a byte count or a size such as '600KB'")
        validity = data.get("validity_period")
        if validity is not None and (isinstance(validity, bool) or not isinstance(validity, int)):
            raise ValueError("validity_period must be a whole number of seconds")
        key = idempotency_key or text("idempotency_key")
        if key is not None and len(key) > 100:
            raise ValueError("idempotency_key must be at most 100 characters")
        return cls(
            to=text("to") or "",
            from_=text("from"),
            messaging_service_sid=text("messaging_service_sid"),
            body=body,
            media=tuple(media),
            fallback=text("fallback"),
            carrier_budget=budget,
            validity_period=validity,
            idempotency_key=f"api:{key}" if key else None,
            allow_files=False,
            conversation_sid=text("conversation"),
            author=text("author"),
        )


# -- small pure functions ---------------------------------------------------------------


def sms_segments(text: str) -> int:
    """How many segments Twilio bills for `text` (GSM-7: 160/153; otherwise UCS-2: 70/67)."""
    if not text:
        return 1
    if all(ch in _GSM7 or ch in _GSM7_EXTENDED for ch in text):
        units = sum(2 if ch in _GSM7_EXTENDED else 1 for ch in text)
        return 1 if units <= 160 else math.ceil(units / 153)
    units = sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)
    return 1 if units <= 70 else math.ceil(units / 67)


def carries_mms(to: str) -> bool:
    """Whether Twilio carries media to this destination: US/CA numbers (MMS), and the
    WhatsApp and RCS channels, which carry media everywhere."""
    return to.startswith(MMS_PREFIXES) or channel_of(to) in ("whatsapp", "rcs")


def channel_of(address: str) -> str:
    """'whatsapp', 'rcs' or 'messenger' for a channel address; 'sms' for a number."""
    match = _CHANNEL_ADDRESS.fullmatch(address.strip())
    return match.group(1) if match else "sms"


def policy_for(request: OutboundRequest) -> Policy:
    """The media rules of the request's channel: WhatsApp's to `whatsapp:`; MMS's (5 MB)
    to numbers, conversations and `rcs:`, because MMS is RCS's fallback and Twilio rejects
    an RCS message over 5 MB when it falls back
    (https://www.twilio.com/docs/messaging/guides/accepted-mime-types)."""
    if channel_of(request.to) == "whatsapp":
        return whatsapp_policy()
    return mms_policy(request.carrier_budget)


def parse_size(text: str) -> int:
    """``600KB``, ``1.5MB``, ``600000`` -> bytes (decimal units, as carriers state limits)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmM]?)[bB]?\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 600KB or 1.5MB")
    factor = {"": 1, "k": 1000, "m": 1_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * factor)


def parse_since(text: str) -> timedelta:
    """``24h``, ``90m``, ``2d``, ``1w`` -> a duration."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([mhdw])\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 90m, 24h, 2d or 1w")
    unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def validate_request(request: OutboundRequest) -> None:
    """Refuse what Twilio would refuse (or what this service never sends), naming the fix."""
    if request.conversation_sid is not None:
        _validate_conversation(request)
    else:
        _validate_addresses(request)
    _validate_content(request)


def is_conversation_sid(value: str | None) -> bool:
    """Whether `value` names a Conversation (an outbound row's `to_addr` when sent into one)."""
    return bool(sids.CONVERSATION.fullmatch(value or ""))


def _validate_conversation(request: OutboundRequest) -> None:
    """A message into a Conversation goes to its participants: no --to, --from or MG."""
    if not is_conversation_sid(request.conversation_sid):
        raise OutboundError(
            f"--conversation {request.conversation_sid!r} is not a Conversation SID "
            "(CH and 32 hex digits)",
            "invalid_conversation",
        )
    if request.to or request.from_ or request.messaging_service_sid:
        raise OutboundError(
            "a conversation message goes to its participants: give --conversation without "
            "--to, --from or --messaging-service (use --author to name the sender)",
            "invalid_conversation",
        )
    if request.author is not None and not 0 < len(request.author) <= 256:
        raise OutboundError("--author must be 1-256 characters", "invalid_author")


def _validate_addresses(request: OutboundRequest) -> None:
    to = request.to.strip()
    if not to:
        raise OutboundError("no recipient: give --to +15558675310 (E.164)", "invalid_to")
    if not (_E164.fullmatch(to) or _CHANNEL_ADDRESS.fullmatch(to)):
        raise OutboundError(
            f"--to {to!r} is not a phone number; write it in E.164 form such as +15558675310 "
            "(Twilio error 21211)",
            "invalid_to",
        )
    if not request.from_ and not request.messaging_service_sid:
        raise OutboundError(
            "no sender: give --from (one of your Twilio numbers) or --messaging-service MG...",
            "invalid_from",
        )
    if request.from_ and not (
        _E164.fullmatch(request.from_)
        or _SHORT_CODE.fullmatch(request.from_)
        or _ALPHANUMERIC.fullmatch(request.from_)
        or _CHANNEL_ADDRESS.fullmatch(request.from_)
    ):
        raise OutboundError(
            f"--from {request.from_!r} is not a phone number, short code or sender id; "
            "use E.164 such as +15017122661",
            "invalid_from",
        )
    if request.messaging_service_sid and not sids.MESSAGING_SERVICE.fullmatch(
        request.messaging_service_sid
    ):
        raise OutboundError(
            f"--messaging-service {request.messaging_service_sid!r} is not a Messaging Service "
            "SID (MG and 32 hex digits)",
            "invalid_from",
        )


def _validate_content(request: OutboundRequest) -> None:
    if not request.body and not request.media:
        raise OutboundError("nothing to send: give a --body, --media, or both", "empty_message")
    if len(request.body) > MAX_BODY:
        raise OutboundError(
            f"the body is {len(request.body)} characters; Twilio allows at most {MAX_BODY} "
            "(error 21658): shorten it",
            "body_too_long",
        )
    policy = policy_for(request)
    count = check_count(len(request.media), policy)
    if not count.accepted:
        raise OutboundError(
            f"{len(request.media)} attachments; a {policy.name} message carries at most "
            f"{policy.max_files} (Twilio error 21623): send fewer, or split them over "
            "several messages",
            "too_many_media",
        )
    if request.fallback not in (None, "link"):
        raise OutboundError("--fallback must be 'link' (or not given)", "invalid_fallback")
    if request.validity_period is not None and not 1 <= request.validity_period <= 36000:
        raise OutboundError("--validity-period must be 1-36000 seconds", "invalid_validity")
    if request.carrier_budget is not None and request.carrier_budget < 10_000:
        raise OutboundError("--carrier-budget must be at least 10KB", "invalid_budget")


def redact(url: str) -> str:
    """A media reference for messages: no query string (presigned URLs carry secrets)."""
    if "://" not in url:
        return Path(url).name
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def mask_number(number: str) -> str:
    """A phone number for logs: the last four digits only."""
    return f"…{number[-4:]}" if len(number) > 4 else number
