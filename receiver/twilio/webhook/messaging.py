"""Messaging webhooks: Twilio's inbound-message and status-callback parameters as
immutable dataclasses, and the field checks every webhook parser here shares.

`inbound_from_rest` builds the same `InboundMessage` from a Message resource
of the REST API, for messages whose webhook never arrived.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from receiver.errors import WebhookError
from receiver.twilio import sids

MAX_MEDIA = 10

# Field shapes (SIDs are in receiver.twilio.sids).
_CHANNEL = re.compile(r"([A-Za-z][A-Za-z0-9_-]{0,31}):(.*)", re.DOTALL)
_COUNT = re.compile(r"[0-9]{1,6}")
_ERROR_CODE = re.compile(r"[0-9]{1,9}")
_STATUS = re.compile(r"[a-z_]{1,40}")
_MEDIA_URL = re.compile(r"MediaUrl([0-9]+)")
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f]")

_GEO = ("City", "State", "Zip", "Country")

_T = TypeVar("_T")


@dataclass(frozen=True)
class MediaRef:
    """One `MediaUrl{N}` with its declared `MediaContentType{N}`."""

    index: int
    url: str
    content_type: str | None

    @property
    def media_sid(self) -> str | None:
        """The Media SID (`ME…`) when the URL is Twilio's Media resource, else None."""
        try:
            segment = urlsplit(self.url).path.rsplit("/", 1)[-1]
        except ValueError:
            return None
        return segment if sids.MEDIA.fullmatch(segment) else None


@dataclass(frozen=True)
class Address:
    """A `From`/`To` value split into its channel (`sms`, `whatsapp`, …) and the address."""

    raw: str
    channel: str
    address: str


@dataclass(frozen=True)
class InboundMessage:
    """Everything an inbound SMS/MMS webhook said, typed, plus every raw parameter in order."""

    message_sid: str
    account_sid: str
    messaging_service_sid: str | None
    from_: Address
    to: Address
    body: str
    num_media: int
    num_segments: int | None
    media: tuple[MediaRef, ...]
    _: KW_ONLY
    # Only a messaging webhook carries these; the REST resource and Conversations do not.
    opt_out_type: str | None = None
    from_city: str | None = None
    from_state: str | None = None
    from_zip: str | None = None
    from_country: str | None = None
    to_city: str | None = None
    to_state: str | None = None
    to_zip: str | None = None
    to_country: str | None = None
    api_version: str | None = None
    sms_status: str | None = None
    profile_name: str | None = None
    wa_id: str | None = None
    params: tuple[tuple[str, str], ...]

    @property
    def channel(self) -> str:
        """The sender's channel: `sms` for plain numbers, else the `From` prefix."""
        return self.from_.channel

    def to_params_dict(self) -> dict[str, list[str]]:
        """Every raw parameter as name -> values in the order received (JSON-friendly)."""
        return params_dict(self.params)

    def param(self, name: str) -> str | None:
        """The first raw value of parameter `name`, or None when it was not sent."""
        return next((value for key, value in self.params if key == name), None)


@dataclass(frozen=True)
class StatusCallback:
    """One outbound-message status callback (`MessageStatus`, `ErrorCode`, …)."""

    message_sid: str
    account_sid: str | None
    status: str
    error_code: int | None
    raw_dlr_done_date: str | None
    to: Address | None
    from_: Address | None
    params: tuple[tuple[str, str], ...]

    def to_params_dict(self) -> dict[str, list[str]]:
        """Every raw parameter as name -> values in the order received (JSON-friendly)."""
        return params_dict(self.params)


def parse_address(raw: str) -> Address:
    """Split a `whatsapp:+1…`-style address; plain numbers and sender ids are channel `sms`."""
    match = _CHANNEL.fullmatch(raw)
    if match is None:
        channel, address = "sms", raw
    else:
        channel, address = match.group(1).lower(), match.group(2)
    if not address.strip():
        raise WebhookError(f"address {raw!r} is empty")
    return Address(raw=raw, channel=channel, address=address)


def parse_inbound(params: Iterable[tuple[str, str]]) -> InboundMessage:
    """Validate an inbound-message webhook's parameters; WebhookError names what is wrong."""
    fields = Fields(params)
    message_sid = fields.message_sid()
    account_sid = fields.required_sid("AccountSid", sids.ACCOUNT, "AC", "Twilio always sends it")
    service_sid = fields.sid("MessagingServiceSid", sids.MESSAGING_SERVICE, "MG")
    from_ = fields.required_address("From")
    to = fields.required_address("To")
    num_media = fields.count("NumMedia") or 0
    if num_media > MAX_MEDIA:
        raise WebhookError(f"NumMedia is {num_media}; Twilio sends at most {MAX_MEDIA}")
    media = tuple(fields.media(index) for index in range(num_media))
    fields.reject_extra_media(num_media)
    # A click-to-WhatsApp ad's image or video arrives as ReferralMediaUrl (with
    # ReferralMediaContentType) beside NumMedia, not counted in it:
    # https://www.twilio.com/docs/messaging/guides/webhook-request ; it is one more item.
    referral = fields.text("ReferralMediaUrl")
    if referral is not None:
        _check_media_url("ReferralMediaUrl", referral)
        media += (MediaRef(len(media), referral, fields.text("ReferralMediaContentType")),)
    geo = {
        f"{side}{part}": fields.text(f"{side}{part}") for side in ("From", "To") for part in _GEO
    }
    return InboundMessage(
        message_sid=message_sid,
        account_sid=account_sid,
        messaging_service_sid=service_sid,
        from_=from_,
        to=to,
        body=fields.one("Body") or "",
        num_media=len(media),
        num_segments=fields.count("NumSegments"),
        media=media,
        opt_out_type=fields.text("OptOutType"),
        from_city=geo["FromCity"],
        from_state=geo["FromState"],
        from_zip=geo["FromZip"],
        from_country=geo["FromCountry"],
        to_city=geo["ToCity"],
        to_state=geo["ToState"],
        to_zip=geo["ToZip"],
        to_country=geo["ToCountry"],
        api_version=fields.text("ApiVersion"),
        sms_status=fields.text("SmsStatus"),
        profile_name=fields.text("ProfileName"),
        wa_id=fields.text("WaId"),
        params=fields.pairs,
    )


def parse_status(params: Iterable[tuple[str, str]]) -> StatusCallback:
    """Validate a status callback's parameters; WebhookError names what is wrong."""
    fields = Fields(params)
    message_sid = fields.message_sid()
    account_sid = fields.sid("AccountSid", sids.ACCOUNT, "AC")
    raw_status = fields.text("MessageStatus")
    if raw_status is None:
        raise WebhookError("MessageStatus is missing; a status callback always carries one")
    status = raw_status.lower()
    if not _STATUS.fullmatch(status):
        raise WebhookError(f"MessageStatus {raw_status!r} is not a message status")
    raw_code = fields.text("ErrorCode")
    if raw_code is not None and not _ERROR_CODE.fullmatch(raw_code):
        raise WebhookError(f"ErrorCode {raw_code!r} is not an integer")
    return StatusCallback(
        message_sid=message_sid,
        account_sid=account_sid,
        status=status,
        error_code=int(raw_code) if raw_code is not None else None,
        raw_dlr_done_date=fields.text("RawDlrDoneDate"),
        to=fields.address("To"),
        from_=fields.address("From"),
        params=fields.pairs,
    )


def inbound_from_rest(
    message: Mapping[str, Any],
    media: Sequence[Mapping[str, Any]],
    media_url: Callable[[str, str], str],
) -> InboundMessage:
    """The `InboundMessage` of a received Message resource from Twilio's REST API.

    `media` is the message's Media list and `media_url(message_sid, media_sid)`
    the URL of a file's bytes (what a webhook's MediaUrlN holds). `params` keeps
    the resource's own fields as received, not webhook names: nothing is made up.
    WebhookError names the field that is wrong.
    """
    pairs = [(str(k), str(v)) for k, v in message.items() if _scalar(k, v)]
    fields = Fields(pairs)
    always = "a Message resource always has one"
    message_sid = fields.required_sid("sid", sids.MESSAGE, "SM or MM", always)
    account_sid = fields.required_sid("account_sid", sids.ACCOUNT, "AC", always)
    from_ = fields.required_address("from")
    to = fields.required_address("to")
    if len(media) > MAX_MEDIA:
        raise WebhookError(f"{len(media)} media; Twilio keeps at most {MAX_MEDIA} per message")
    refs = []
    for index, item in enumerate(media):
        media_sid = str(item.get("sid") or "")
        if not sids.MEDIA.fullmatch(media_sid):
            raise WebhookError(f"media {index} has no Media SID (ME and 32 letters or digits)")
        url = media_url(message_sid, media_sid)
        _check_media_url(f"media {index}", url)
        content_type = item.get("content_type")
        refs.append(MediaRef(index, url, str(content_type) if content_type else None))
        pairs.extend((f"media.{index}.{k}", str(v)) for k, v in item.items() if _scalar(k, v))
    return InboundMessage(
        message_sid=message_sid,
        account_sid=account_sid,
        messaging_service_sid=fields.sid("messaging_service_sid", sids.MESSAGING_SERVICE, "MG"),
        from_=from_,
        to=to,
        body=fields.one("body") or "",
        num_media=len(refs),
        num_segments=fields.count("num_segments"),
        media=tuple(refs),
        api_version=fields.text("api_version"),
        sms_status=fields.text("status"),
        params=tuple(pairs),
    )


def _scalar(name: Any, value: Any) -> bool:
    """Whether a REST field is kept in `params`: set, plain, and not a local annotation."""
    return (
        isinstance(name, str)
        and not name.startswith("_")
        and isinstance(value, str | int | float)
        and not isinstance(value, bool)
    )


class Fields:
    """The received parameters, with lookups that refuse ambiguous repeated values."""

    def __init__(self, params: Iterable[tuple[str, str]]) -> None:
        pairs: list[tuple[str, str]] = []
        values: dict[str, list[str]] = {}
        try:
            for pair in params:
                name, value = pair
                _check_text(name, value)
                pairs.append((name, value))
                values.setdefault(name, []).append(value)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, WebhookError):
                raise
            raise WebhookError("parameters must be (name, value) pairs of text") from None
        self.pairs = tuple(pairs)
        self._values = values

    def one(self, name: str) -> str | None:
        """The parameter's value; a repetition with a different value is refused."""
        values = self._values.get(name)
        if not values:
            return None
        if any(value != values[0] for value in values[1:]):
            raise WebhookError(f"{name} was sent {len(values)} times with different values")
        return values[0]

    def text(self, name: str) -> str | None:
        """The parameter's value, with an absent or blank one as None."""
        value = self.one(name)
        return value if value is not None and value.strip() else None

    def message_sid(self) -> str:
        """`MessageSid`, required: the deprecated SmsMessageSid/SmsSid aliases are not enough."""
        return self.required_sid(
            "MessageSid", sids.MESSAGE, "SM or MM", "SmsMessageSid/SmsSid alone are not accepted"
        )

    def sid(self, name: str, pattern: re.Pattern[str], prefix: str) -> str | None:
        """A SID of Twilio's exact shape, or None when absent."""
        value = self.text(name)
        if value is None:
            return None
        if not pattern.fullmatch(value):
            raise WebhookError(
                f"{name} {value[:40]!r} is not a Twilio SID ({prefix} and 32 letters or digits)"
            )
        return value

    def required_sid(self, name: str, pattern: re.Pattern[str], prefix: str, why: str) -> str:
        """A SID that must be present; `why` says why its absence is refused."""
        return _present(self.sid(name, pattern, prefix), f"{name} ({prefix}…) is missing; {why}")

    def address(self, name: str) -> Address | None:
        """The parsed address, or None when absent or blank."""
        value = self.text(name)
        if value is None:
            return None
        try:
            return parse_address(value)
        except WebhookError as exc:
            raise WebhookError(f"{name}: {exc}") from None

    def required_address(self, name: str) -> Address:
        """The parsed address, which must be present and not blank."""
        return _present(self.address(name), f"{name} is missing or empty")

    def count(self, name: str) -> int | None:
        """A non-negative integer parameter, or None when absent or blank."""
        value = self.text(name)
        if value is None:
            return None
        if not _COUNT.fullmatch(value):
            raise WebhookError(f"{name} {value[:20]!r} is not a non-negative integer")
        return int(value)

    def media(self, index: int) -> MediaRef:
        """`MediaUrl{index}` (required, http(s)) with its declared content type."""
        name = f"MediaUrl{index}"
        url = self.text(name)
        if url is None:
            raise WebhookError(f"{name} is missing although NumMedia says it exists")
        _check_media_url(name, url)
        content_type = self.text(f"MediaContentType{index}")
        return MediaRef(index=index, url=url, content_type=content_type)

    def reject_extra_media(self, num_media: int) -> None:
        """Refuse a MediaUrlN that NumMedia does not account for: it would be silently lost."""
        for name in self._values:
            match = _MEDIA_URL.fullmatch(name)
            if match and int(match.group(1)) >= num_media and self.text(name) is not None:
                if "NumMedia" not in self._values:
                    raise WebhookError(f"{name} was sent without NumMedia")
                raise WebhookError(f"{name} was sent but NumMedia is {num_media}")


def _present(value: _T | None, problem: str) -> _T:
    """`value`, or WebhookError(`problem`) when it is None."""
    if value is None:
        raise WebhookError(problem)
    return value


def _check_text(name: str, value: str) -> None:
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError("parameter names and values must be text")
    label = name if name.isprintable() and len(name) <= 40 else repr(name[:40])
    for text in (name, value):
        if "\x00" in text:
            raise WebhookError(f"parameter {label} contains a NUL character")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise WebhookError(f"parameter {label} is not valid UTF-8 text") from None


def _check_media_url(name: str, url: str) -> None:
    if _URL_UNSAFE.search(url):
        raise WebhookError(f"{name} contains spaces or control characters")
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        # .port raises ValueError for a port that requests could not connect to either.
        _ = parts.port
    except ValueError:
        valid = False
    if not valid:
        raise WebhookError(f"{name} {url[:100]!r} is not an absolute http(s) URL")
    segment = parts.path.rsplit("/", 1)[-1]
    if segment.startswith("ME") and not sids.MEDIA.fullmatch(segment):
        raise WebhookError(f"{name} ends in a malformed Media SID {segment[:40]!r}")


def params_dict(pairs: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out
