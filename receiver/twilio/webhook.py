"""Parse Twilio's inbound-message and status-callback parameters into immutable dataclasses.

`inbound_from_rest` builds the same `InboundMessage` from a Message resource
of the REST API, for messages whose webhook never arrived.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from receiver.errors import WebhookError

MAX_MEDIA = 10

# Sids end up in storage keys and file names, so only Twilio's exact shape is accepted.
_MESSAGE_SID = re.compile(r"(?:SM|MM)[A-Za-z0-9]{32}")
_ACCOUNT_SID = re.compile(r"AC[A-Za-z0-9]{32}")
_SERVICE_SID = re.compile(r"MG[A-Za-z0-9]{32}")
_MEDIA_SID = re.compile(r"ME[A-Za-z0-9]{32}")
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
        return segment if _MEDIA_SID.fullmatch(segment) else None


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
        return _params_dict(self.params)

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
        return _params_dict(self.params)


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
    fields = _Fields(params)
    message_sid = fields.message_sid()
    account_sid = fields.required_sid("AccountSid", _ACCOUNT_SID, "AC", "Twilio always sends it")
    service_sid = fields.sid("MessagingServiceSid", _SERVICE_SID, "MG")
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
    fields = _Fields(params)
    message_sid = fields.message_sid()
    account_sid = fields.sid("AccountSid", _ACCOUNT_SID, "AC")
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
    fields = _Fields(pairs)
    always = "a Message resource always has one"
    message_sid = fields.required_sid("sid", _MESSAGE_SID, "SM or MM", always)
    account_sid = fields.required_sid("account_sid", _ACCOUNT_SID, "AC", always)
    from_ = fields.required_address("from")
    to = fields.required_address("to")
    if len(media) > MAX_MEDIA:
        raise WebhookError(f"{len(media)} media; Twilio keeps at most {MAX_MEDIA} per message")
    refs = []
    for index, item in enumerate(media):
        media_sid = str(item.get("sid") or "")
        if not _MEDIA_SID.fullmatch(media_sid):
            raise WebhookError(f"media {index} has no Media SID (ME and 32 letters or digits)")
        url = media_url(message_sid, media_sid)
        _check_media_url(f"media {index}", url)
        content_type = item.get("content_type")
        refs.append(MediaRef(index, url, str(content_type) if content_type else None))
        pairs.extend((f"media.{index}.{k}", str(v)) for k, v in item.items() if _scalar(k, v))
    return InboundMessage(
        message_sid=message_sid,
        account_sid=account_sid,
        messaging_service_sid=fields.sid("messaging_service_sid", _SERVICE_SID, "MG"),
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


class _Fields:
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
            "MessageSid", _MESSAGE_SID, "SM or MM", "SmsMessageSid/SmsSid alone are not accepted"
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
    if segment.startswith("ME") and not _MEDIA_SID.fullmatch(segment):
        raise WebhookError(f"{name} ends in a malformed Media SID {segment[:40]!r}")


def _params_dict(pairs: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


# -- Conversations post-event webhooks -----------------------------------------
# Form-encoded and signed like messaging webhooks; field names as Twilio sends
# them: https://www.twilio.com/docs/conversations/conversations-webhooks
# (the `Media` parameter is a JSON list of {Sid, ContentType, Filename, Size}).

_CONVERSATION_SID = re.compile(r"CH[A-Za-z0-9]{32}")
_CHAT_SERVICE_SID = re.compile(r"IS[A-Za-z0-9]{32}")
_CONVERSATION_MESSAGE_SID = re.compile(r"IM[A-Za-z0-9]{32}")
_PARTICIPANT_SID = re.compile(r"MB[A-Za-z0-9]{32}")

#: Post-event types this receiver keeps; any other type is answered 200 and ignored.
CONVERSATION_EVENTS = frozenset(
    {
        "onMessageAdded",
        "onMessageUpdated",
        "onMessageRemoved",
        "onConversationAdded",
        "onConversationUpdated",
        "onConversationRemoved",
        "onParticipantAdded",
        "onParticipantUpdated",
        "onParticipantRemoved",
        "onDeliveryUpdated",
    }
)
#: Delivery receipt statuses (https://www.twilio.com/docs/conversations/delivery-receipts).
RECEIPT_STATUSES = frozenset({"sent", "delivered", "read", "failed", "undelivered"})
_RECEIPT_SID = re.compile(r"DY[A-Za-z0-9]{32}")


@dataclass(frozen=True)
class ConversationMedia:
    """One item of a Conversations message's `Media` list (an MCS Media resource)."""

    sid: str
    content_type: str | None
    filename: str | None
    size: int | None


@dataclass(frozen=True)
class DeliveryReceipt:
    """One participant's delivery receipt (`onDeliveryUpdated`) of a Conversations message."""

    sid: str
    message_sid: str
    conversation_sid: str
    participant_sid: str | None
    channel_message_sid: str | None
    #: sent, delivered, read, failed or undelivered (lower case).
    status: str
    error_code: int | None


@dataclass(frozen=True)
class ConversationEvent:
    """One Conversations post-event webhook, typed, plus every raw parameter in order."""

    event_type: str
    account_sid: str
    conversation_sid: str
    chat_service_sid: str | None
    messaging_service_sid: str | None
    message_sid: str | None
    participant_sid: str | None
    author: str | None
    body: str | None
    attributes: str | None
    source: str | None
    index: int | None
    identity: str | None
    address: str | None
    proxy_address: str | None
    projected_address: str | None
    friendly_name: str | None
    unique_name: str | None
    state: str | None
    retry_count: int | None
    media: tuple[ConversationMedia, ...]
    params: tuple[tuple[str, str], ...]
    receipt: DeliveryReceipt | None = None

    def to_params_dict(self) -> dict[str, list[str]]:
        """Every raw parameter as name -> values in the order received (JSON-friendly)."""
        return _params_dict(self.params)


#: The key of the mark a message we send into a conversation carries in its `Attributes`
#: (a JSON object): {"mms_receiver": {"send": <hash of the outbound row>, "part": <n>}}.
SEND_MARK_KEY = "mms_receiver"


def send_mark(attributes: str | None) -> tuple[str, int] | None:
    """(send, part) of our mark in a message's `Attributes`, or None: not sent by us."""
    try:
        mark = json.loads(attributes or "{}")[SEND_MARK_KEY]
        return str(mark["send"]), int(mark["part"])
    except (ValueError, TypeError, KeyError):
        return None


def conversation_event_type(params: Iterable[tuple[str, str]]) -> str | None:
    """The `EventType` of a Conversations webhook, or None when absent."""
    return _Fields(params).text("EventType")


def parse_conversation_event(params: Iterable[tuple[str, str]]) -> ConversationEvent:
    """Validate a Conversations post-event webhook; WebhookError names what is wrong."""
    fields = _Fields(params)
    event_type = fields.text("EventType")
    if event_type not in CONVERSATION_EVENTS:
        raise WebhookError(f"EventType {str(event_type)[:40]!r} is not a kept post-event")
    every = f"Twilio sends it with every {event_type}"
    account_sid = fields.required_sid("AccountSid", _ACCOUNT_SID, "AC", every)
    conversation_sid = fields.required_sid("ConversationSid", _CONVERSATION_SID, "CH", every)
    carried = f"{event_type} always carries it"
    message_sid = (
        fields.required_sid("MessageSid", _CONVERSATION_MESSAGE_SID, "IM", carried)
        if event_type.startswith("onMessage")
        else fields.sid("MessageSid", _CONVERSATION_MESSAGE_SID, "IM")
    )
    participant_sid = (
        fields.required_sid("ParticipantSid", _PARTICIPANT_SID, "MB", carried)
        if event_type.startswith("onParticipant")
        else fields.sid("ParticipantSid", _PARTICIPANT_SID, "MB")
    )
    receipt = None
    if event_type == "onDeliveryUpdated":
        receipt = _receipt(fields, conversation_sid, participant_sid)
    return ConversationEvent(
        event_type=event_type,
        account_sid=account_sid,
        conversation_sid=conversation_sid,
        chat_service_sid=fields.sid("ChatServiceSid", _CHAT_SERVICE_SID, "IS"),
        messaging_service_sid=fields.sid("MessagingServiceSid", _SERVICE_SID, "MG"),
        message_sid=message_sid,
        participant_sid=participant_sid,
        author=fields.text("Author"),
        body=fields.one("Body"),
        attributes=fields.text("Attributes"),
        source=_clamp(fields.text("Source"), 32),
        index=fields.count("Index"),
        identity=fields.text("Identity"),
        address=_clamp(fields.text("MessagingBinding.Address"), 255),
        proxy_address=_clamp(fields.text("MessagingBinding.ProxyAddress"), 255),
        projected_address=_clamp(fields.text("MessagingBinding.ProjectedAddress"), 255),
        friendly_name=fields.text("FriendlyName"),
        unique_name=fields.text("UniqueName"),
        state=_clamp(fields.text("State"), 16),
        retry_count=fields.count("RetryCount"),
        media=parse_conversation_media(fields.text("Media")),
        params=fields.pairs,
        receipt=receipt,
    )


def _receipt(
    fields: _Fields, conversation_sid: str, participant_sid: str | None
) -> DeliveryReceipt:
    """The receipt fields of `onDeliveryUpdated`
    (https://www.twilio.com/docs/conversations/delivery-receipts)."""
    carried = "onDeliveryUpdated always carries it"
    sid = fields.required_sid("DeliveryReceiptSid", _RECEIPT_SID, "DY", carried)
    message_sid = fields.required_sid("MessageSid", _CONVERSATION_MESSAGE_SID, "IM", carried)
    status = (fields.text("Status") or "").lower()
    if status not in RECEIPT_STATUSES:
        raise WebhookError(
            f"Status {status[:20]!r} is not a delivery receipt status "
            f"({', '.join(sorted(RECEIPT_STATUSES))})"
        )
    code = fields.count("ErrorCode")
    return DeliveryReceipt(
        sid=sid,
        message_sid=message_sid,
        conversation_sid=conversation_sid,
        participant_sid=participant_sid,
        channel_message_sid=_clamp(fields.text("ChannelMessageSid"), 34),
        status=status,
        error_code=code or None,
    )


def parse_conversation_media(raw: str | None) -> tuple[ConversationMedia, ...]:
    """The `Media` JSON list of a Conversations message; WebhookError when malformed."""
    if raw is None:
        return ()
    try:
        items = json.loads(raw)
    except (ValueError, RecursionError):
        raise WebhookError("Media is not valid JSON (a list of {Sid, ContentType, …})") from None
    if not isinstance(items, list):
        raise WebhookError("Media must be a JSON list of media objects")
    if len(items) > MAX_MEDIA:
        raise WebhookError(f"Media lists {len(items)} items; at most {MAX_MEDIA} are accepted")
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise WebhookError(f"Media item {n} is not an object")
        sid = item.get("Sid")
        if not isinstance(sid, str) or not _MEDIA_SID.fullmatch(sid):
            raise WebhookError(f"Media item {n} has no Media SID (ME and 32 letters or digits)")
        size = item.get("Size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise WebhookError(f"Media item {n} Size is not a non-negative integer")
        out.append(
            ConversationMedia(
                sid=sid,
                content_type=_optional_text(item.get("ContentType")),
                filename=_optional_text(item.get("Filename")),
                size=size,
            )
        )
    return tuple(out)


def _clamp(value: str | None, size: int) -> str | None:
    return value[:size] if value is not None else None


def _optional_text(value: Any) -> str | None:
    return value[:255] if isinstance(value, str) and value.strip() else None


def inbound_from_conversation(
    event: ConversationEvent, media_url: Callable[[str], str] | None
) -> InboundMessage:
    """The `InboundMessage` of an `onMessageAdded`, so it is stored like any inbound message.

    `From` is the author (a phone number for SMS/MMS participants, an identity
    for chat users), `To` the conversation; `media_url(media_sid)` gives each
    file's MCS Media URL (None: the message carries no media). `params` keeps
    the webhook's own parameters: nothing is made up.
    """
    if event.message_sid is None:
        raise WebhookError("MessageSid is missing")
    if event.media and media_url is None:
        raise WebhookError(
            "ChatServiceSid is missing and the conversation is unknown, "
            "so its media cannot be located in MCS"
        )
    # Index columns hold 255 characters; an identity may be longer (kept whole in params).
    author = (event.author or "system")[:255]
    refs = tuple(
        MediaRef(n, media_url(item.sid), item.content_type)
        for n, item in enumerate(event.media)
        if media_url is not None
    )
    return InboundMessage(
        message_sid=event.message_sid,
        account_sid=event.account_sid,
        messaging_service_sid=event.messaging_service_sid,
        from_=Address(raw=author, channel=(event.source or "chat").lower()[:32], address=author),
        to=Address(
            raw=event.conversation_sid, channel="conversations", address=event.conversation_sid
        ),
        body=event.body or "",
        num_media=len(refs),
        num_segments=None,
        media=refs,
        params=event.params,
    )


# -- Event Streams (CloudEvents 1.0 over a webhook sink) ----------------------------
# https://www.twilio.com/docs/events/webhook-quickstart : a JSON array of
# CloudEvents (`specversion`, `type`, `source`, `id`, `time`, `data`), delivered
# at least once (https://www.twilio.com/docs/events/event-delivery-and-duplication).

#: Events in one delivery; Twilio's batches stay under 64 kB, so far fewer.
MAX_BATCH = 1000
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,128}")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class CloudEvent:
    """One CloudEvent of an Event Streams delivery; `data` is its JSON object."""

    id: str
    type: str
    source: str | None
    time: str | None
    data: Mapping[str, Any]


def parse_cloud_events(payload: Any) -> tuple[CloudEvent, ...]:
    """A single CloudEvent or a batch array, validated; WebhookError names what is wrong."""
    items = payload if isinstance(payload, list) else [payload]
    if len(items) > MAX_BATCH:
        raise WebhookError(f"{len(items)} events in one delivery; at most {MAX_BATCH}")
    events = []
    for n, item in enumerate(items):
        where = f"event {n}"
        if not isinstance(item, dict):
            raise WebhookError(f"{where} is not a JSON object")
        if item.get("specversion") != "1.0":
            raise WebhookError(f'{where}: specversion must be "1.0" (CloudEvents 1.0)')
        event_id, event_type = item.get("id"), item.get("type")
        if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            raise WebhookError(f"{where}: id is missing or not 1-128 printable characters")
        if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
            raise WebhookError(f"{where}: type is missing or malformed")
        data = item.get("data", {})
        if not isinstance(data, dict):
            raise WebhookError(f"{where}: data must be a JSON object")
        source, when = item.get("source"), item.get("time")
        events.append(
            CloudEvent(
                id=event_id,
                type=event_type,
                source=source[:255] if isinstance(source, str) else None,
                time=when[:64] if isinstance(when, str) else None,
                data=data,
            )
        )
    return tuple(events)


#: Messaging.MessageStatus event types and the status each one reports
#: (https://www.twilio.com/docs/events/event-types/messaging/outbound-message).
STREAM_STATUSES = {
    f"com.twilio.messaging.message.{s}": s
    for s in ("queued", "sent", "delivered", "undelivered", "failed", "read")
}
#: Conversations event types and the post-event webhook each one mirrors
#: (https://www.twilio.com/docs/events/event-types/conversations/message).
STREAM_CONVERSATION_EVENTS = {
    f"com.twilio.conversations.{thing}.{verb}": f"on{thing.capitalize()}{verb.capitalize()}"
    for thing in ("message", "conversation", "participant")
    for verb in ("added", "updated", "removed")
} | {
    # Its data has the webhook's fields; Twilio lists the type as discontinued
    # (https://www.twilio.com/docs/events/event-types/conversations/delivery), but a
    # subscription that still delivers it is applied.
    "com.twilio.conversations.delivery.updated": "onDeliveryUpdated",
}


#: A received message (https://www.twilio.com/docs/events/event-types/messaging/inbound-message).
STREAM_INBOUND = "com.twilio.messaging.inbound-message.received"


def inbound_sid_from_stream(event: CloudEvent) -> str:
    """The MessageSid of an inbound-message event; WebhookError when it has none."""
    sid = event.data.get("messageSid")
    if not isinstance(sid, str) or not _MESSAGE_SID.fullmatch(sid):
        raise WebhookError("data.messageSid is missing or not a Message SID (SM or MM)")
    return sid


def status_from_stream(event: CloudEvent) -> StatusCallback:
    """A Messaging status event as the same StatusCallback `/twilio/status` gives.

    Its `messageStatus` comes in upper case (`DELIVERED`); parse_status lowers it.
    """
    data = event.data
    names = {
        "messageSid": "MessageSid",
        "accountSid": "AccountSid",
        "messageStatus": "MessageStatus",
        "errorCode": "ErrorCode",
        "rawDlrDoneDate": "RawDlrDoneDate",
        "from": "From",
        "to": "To",
        "messagingServiceSid": "MessagingServiceSid",
    }
    params = [(names[k], _text(v)) for k, v in data.items() if k in names and v is not None]
    if "messageStatus" not in data:
        params.append(("MessageStatus", STREAM_STATUSES.get(event.type, "")))
    return parse_status(params)


def conversation_from_stream(event: CloudEvent) -> ConversationEvent:
    """A Conversations event as the same ConversationEvent the post-event webhook gives.

    Its data names the body `MessageBody` and each media item's SID `MediaSid`,
    and carries no `ChatServiceSid` (taken from the conversation when known).
    """
    params: list[tuple[str, str]] = [("EventType", STREAM_CONVERSATION_EVENTS[event.type])]
    for key, value in event.data.items():
        if key == "EventType" or value is None:
            continue
        if key == "Media" and isinstance(value, list):
            media = [
                {("Sid" if k == "MediaSid" else k): v for k, v in item.items()}
                if isinstance(item, dict)
                else item
                for item in value
            ]
            params.append(("Media", json.dumps(media)))
        elif key == "MessageBody":
            params.append(("Body", _text(value)))
        elif key == "Attributes":
            params.append(("Attributes", _text(value)))  # kept whole: the webhook's is JSON text
        elif isinstance(value, dict):
            params.extend((f"{key}.{k}", _text(v)) for k, v in value.items() if v is not None)
        else:
            params.append((str(key), _text(value)))
    return parse_conversation_event(params)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
