"""Outbound workflow: prepare media, host it, enforce opt-outs and rate limits, send, track.

send(request)
  validate      addresses, body length, attachment count, sender
  reserve       one outbound row per idempotency key; a key already sent is never sent again
  opt-out       the recipient's STOP (inbound keyword or an earlier 21610) refuses the send
  prepare       each attachment: local file or URL (shared fetcher, public hosts only)
                -> inspect -> MMS policy -> transform.fit (convert, resize, strip EXIF/GPS)
                where the verdict is fixable; otherwise refuse with the reason, or with
                fallback "link" send an SMS carrying links instead
  host          put the prepared files in storage; a URL Twilio can fetch without
                credentials: our signed /m/<token> route, or an S3 presigned URL
  pre-flight    HEAD and GET every URL as Twilio will: reachable, Content-Type and bytes
                as prepared, size within the limit
  rate limit    per-sender token bucket
  submit        claim the row (pending -> submitting), create the message, record the sid
status events   every callback stored; the status only moves forward (index.outbound_store)
reconcile       inbound messages Twilio has but the index lacks go through the inbound
                pipeline's ingest path, as if their webhook had arrived

Nothing is sent until every attachment of a message passed pre-flight; a row left
``submitting`` by a crash is matched against Twilio's message list before any resend.
This module never imports Flask.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from receiver.errors import (
    ConfigError,
    FetchError,
    MediaError,
    OutboundError,
    ReceiverError,
    StorageError,
    TwilioApiError,
    WebhookError,
)
from receiver.index.outbound_store import OutboundStore
from receiver.media import types
from receiver.media.fetch import FetchConfig, Fetcher
from receiver.media.inspect import MediaInfo, inspect
from receiver.media.policy import Policy, check, check_count, mms_policy
from receiver.media.transform import fit
from receiver.ratelimit import RateLimiter
from receiver.storage.keys import outbound_key
from receiver.twilio.rest import TwilioRest, TwilioRestError
from receiver.twilio.webhook import parse_inbound, parse_status

if TYPE_CHECKING:
    from receiver.inbound.pipeline import Pipeline
    from receiver.index import MediaIndex
    from receiver.services import Services
    from receiver.settings import Settings
    from receiver.storage.base import ObjectStore

log = logging.getLogger(__name__)

MAX_BODY = 1600
#: Twilio waits up to ValidityPeriod (default 10 h) in its queue before fetching media.
DEFAULT_VALIDITY = 36000
#: How long a prepared MMS file stays fetchable: the longest queue time plus a margin.
MMS_LINK_TTL = DEFAULT_VALIDITY + 2 * 3600
#: How long a link sent by SMS (fallback "link") stays valid: the longest an S3 URL may.
FALLBACK_LINK_TTL = 7 * 24 * 3600
MAX_FILENAME = 20
#: Country codes where Twilio carries MMS (TWILIO.md 4.3: US and Canada share +1).
MMS_PREFIXES = ("+1",)
#: Problems no fallback can help with: the file itself is bad, or it was not fetched.
BAD_FILE_REASONS = frozenset(
    {"empty", "corrupt", "decompression_bomb", "type_mismatch", "blocked_host", "fetch_failed"}
)
#: Twilio errors after which the same request must not be repeated unchanged.
_REJECTING_STATUSES = frozenset({400, 404, 409, 422})

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_CHANNEL_ADDRESS = re.compile(r"(whatsapp|messenger|rcs):\S{3,}")
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
_SHORT_CODE = re.compile(r"[0-9]{3,8}")
_ALPHANUMERIC = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")


# -- values --------------------------------------------------------------------------

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
        )


@dataclass(frozen=True)
class PreparedMedia:
    """One attachment as it will be sent: hosted, with what was done to it."""

    source: str
    content_type: str
    kind: str
    size: int
    sha256: str
    filename: str
    width: int | None = None
    height: int | None = None
    changes: tuple[str, ...] = ()
    key: str | None = None
    url: str | None = None
    expires_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (stored in outbound_messages.media and returned by the API)."""
        out = asdict(self)
        out["changes"] = list(self.changes)
        return out


@dataclass(frozen=True)
class PreparedMessage:
    """A message ready to send: final body, hosted media, how it goes (MMS or SMS)."""

    request: OutboundRequest
    #: "mms" (media attached), "sms" (text only) or "link" (SMS with links to the media).
    mode: str
    body: str
    media: tuple[PreparedMedia, ...]
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        """Bytes of attached media (0 for SMS)."""
        return sum(m.size for m in self.media) if self.mode == "mms" else 0

    @property
    def media_urls(self) -> list[str]:
        """The MediaUrl parameters (empty unless MMS)."""
        return [m.url for m in self.media if m.url] if self.mode == "mms" else []

    @property
    def segments(self) -> int:
        """Message segments it costs against the sender's throughput."""
        return 1 if self.mode == "mms" else sms_segments(self.body)


@dataclass(frozen=True)
class SendResult:
    """What `send` did: the outbound row, Twilio's sid and status, and whether it was new."""

    row_id: int | None
    idempotency_key: str | None
    sid: str | None
    status: str
    #: The key was already sent (or is being sent): nothing new went to Twilio.
    duplicate: bool
    prepared: PreparedMessage | None = None
    error_code: int | None = None
    error_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's answer."""
        out: dict[str, Any] = {
            "id": self.row_id,
            "sid": self.sid,
            "status": self.status,
            "idempotency_key": self.idempotency_key,
            "duplicate": self.duplicate,
            "error_code": self.error_code,
            "error_message": self.error_message,
        }
        if self.prepared is not None:
            out.update(
                mode=self.prepared.mode,
                body=self.prepared.body,
                media=[m.to_json() for m in self.prepared.media],
                notes=list(self.prepared.notes),
            )
        return out


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


@dataclass
class ReconcileSummary:
    """What a reconcile run found and did."""

    listed: int = 0
    known: int = 0
    ingested: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)


# -- small pure functions -------------------------------------------------------------------


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
    """Whether Twilio carries MMS to this destination (US/CA numbers)."""
    return to.startswith(MMS_PREFIXES)


def short_filename(source: str, extension: str, index: int) -> str:
    """A Content-Disposition filename of at most 20 characters, no spaces or specials."""
    stem = Path(urlsplit(source).path if "://" in source else source).stem
    stem = _NAME_CHARS.sub("", stem) or f"media{index + 1}"
    room = MAX_FILENAME - len(extension) - 1
    return f"{stem[:room]}.{extension}"


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


def row_key(batch: str, to: str, sender: str, body: str, media: Sequence[str]) -> str:
    """The idempotency key of a bulk row: same batch, recipient and content -> same key."""
    digest = hashlib.sha256(repr((to, sender, body, tuple(media))).encode()).hexdigest()[:24]
    return f"{batch}:{digest}"


def validate_request(request: OutboundRequest) -> None:
    """Refuse what Twilio would refuse (or what this service never sends), naming the fix."""
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
    if request.messaging_service_sid and not _SERVICE_SID.fullmatch(request.messaging_service_sid):
        raise OutboundError(
            f"--messaging-service {request.messaging_service_sid!r} is not a Messaging Service "
            "SID (MG and 32 hex digits)",
            "invalid_from",
        )
    if not request.body and not request.media:
        raise OutboundError("nothing to send: give a --body, --media, or both", "empty_message")
    if len(request.body) > MAX_BODY:
        raise OutboundError(
            f"the body is {len(request.body)} characters; Twilio allows at most {MAX_BODY} "
            "(error 21658): shorten it",
            "body_too_long",
        )
    count = check_count(len(request.media), mms_policy())
    if not count.accepted:
        raise OutboundError(
            f"{len(request.media)} attachments; an MMS carries at most 10 (Twilio error 21623): "
            "send fewer, or split them over several messages",
            "too_many_media",
        )
    if request.fallback not in (None, "link"):
        raise OutboundError("--fallback must be 'link' (or not given)", "invalid_fallback")
    if request.validity_period is not None and not 1 <= request.validity_period <= 36000:
        raise OutboundError("--validity-period must be 1-36000 seconds", "invalid_validity")
    if request.carrier_budget is not None and request.carrier_budget < 10_000:
        raise OutboundError("--carrier-budget must be at least 10KB", "invalid_budget")


# -- signed media links -----------------------------------------------------------------


class MediaLinks:
    """Signs and checks /m/<token> links: which stored file, until when (HMAC-SHA256).

    A token is ``<yyyymm>.<random>.<ext>.<expiry base 36>.<signature>``: it names
    the object ``outbound/<yyyy>/<mm>/<random>.<ext>`` without a lookup, and is
    short enough to put in an SMS.
    """

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ConfigError("RECEIVER_SECRET_KEY is empty; signed media links need it")
        self._key = hashlib.sha256(b"mms-receiver media links\x00" + secret_key.encode()).digest()

    def new_key(self, extension: str, *, now: datetime | None = None) -> tuple[str, str]:
        """A fresh storage key and the stem the token will carry: (key, "yyyymm.random.ext")."""
        moment = now or datetime.now(UTC)
        rand = secrets.token_hex(8)
        key = outbound_key(rand, extension, when=moment)
        return key, f"{moment:%Y%m}.{rand}.{extension}"

    def sign(self, stem: str, expires_at: int) -> str:
        """The token for `stem` valid until the Unix time `expires_at`."""
        payload = f"{stem}.{_base36(expires_at)}"
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str, *, now: float | None = None) -> str:
        """The storage key a token names; ValueError("invalid"|"expired") otherwise."""
        parts = token.split(".")
        if len(parts) != 5:
            raise ValueError("invalid")
        payload, signature = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(self._mac(payload), signature):
            raise ValueError("invalid")
        month, rand, extension, expiry = parts[:4]
        try:
            expires_at = int(expiry, 36)
            when = datetime(int(month[:4]), int(month[4:]), 1, tzinfo=UTC)
            key = outbound_key(rand, extension, when=when)
        except ValueError:
            raise ValueError("invalid") from None
        if expires_at < (now if now is not None else time.time()):
            raise ValueError("expired")
        return key

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


# -- the workflow -------------------------------------------------------------------------


@dataclass
class _Source:
    """One attachment while it is prepared: its bytes (open file) and facts."""

    index: int
    source: str
    file: BinaryIO
    info: MediaInfo
    #: The converted or fitted bytes, when they differ from `file`.
    output: BinaryIO | None = None

    @property
    def payload(self) -> BinaryIO:
        """What will be stored and sent."""
        return self.output if self.output is not None else self.file


class Outbound:
    """Runs the outbound workflow against one index, store, Twilio client and limiter."""

    def __init__(
        self,
        settings: Settings,
        index: MediaIndex,
        store: ObjectStore,
        *,
        rest: TwilioRest | None = None,
        limiter: RateLimiter | None = None,
        pipeline: Pipeline | None = None,
        fetcher: Fetcher | None = None,
        in_flight_grace: float = 35.0,
    ) -> None:
        self.settings = settings
        self.index = index
        self.outbox = OutboundStore(index.engine, begin=index.begin)
        self.store = store
        self._rest = rest
        self.limiter = limiter or RateLimiter()
        self.pipeline = pipeline
        self.links = MediaLinks(settings.secret_key)
        self.fetcher = fetcher or Fetcher(FetchConfig.outbound(settings))
        self._preflight_fetchers: dict[str, Fetcher] = {}
        #: How long an interrupted create may still land in Twilio's records: the REST
        #: client's read timeout plus a margin. Rows claimed more recently are not resent.
        self.in_flight_grace = in_flight_grace

    @classmethod
    def from_services(cls, services: Services, **kwargs: Any) -> Outbound:
        """The workflow over a process's services (index, store, pipeline)."""
        return cls(
            services.settings, services.index, services.store, pipeline=services.pipeline, **kwargs
        )

    @property
    def rest(self) -> TwilioRest:
        """The Twilio client; ConfigError naming the variables when credentials are missing."""
        if self._rest is None:
            self._rest = TwilioRest.from_settings(self.settings)
        return self._rest

    def close(self) -> None:
        """Release HTTP sessions."""
        self.fetcher.close()
        for fetcher in self._preflight_fetchers.values():
            fetcher.close()
        if self._rest is not None:
            self._rest.close()

    @property
    def status_callback(self) -> str | None:
        """Where Twilio should post delivery status: RECEIVER_PUBLIC_URL + /twilio/status."""
        return f"{self.settings.public_url}/twilio/status" if self.settings.public_url else None

    # -- preparation -----------------------------------------------------------------------

    def prepare(
        self, request: OutboundRequest, *, host: bool = True, link_ttl: int | None = None
    ) -> PreparedMessage:
        """Check and fix every attachment, then (with `host`) store and pre-flight it.

        Raises OutboundError naming every attachment that cannot be sent and why.
        """
        validate_request(request)
        policy = mms_policy(request.carrier_budget)
        notes: list[str] = []
        mms_ok = carries_mms(request.to)
        if request.media and not mms_ok and request.fallback != "link":
            raise OutboundError(
                f"Twilio carries MMS only to US and Canadian (+1) numbers, not {request.to}; "
                "add --fallback link to send an SMS with links to the media",
                "mms_not_carried",
            )
        with ExitStack() as stack:
            sources = [self._open(i, item, request, stack) for i, item in enumerate(request.media)]
            bad = [(s, check(s.info, policy)) for s in sources]
            broken = [(s, v) for s, v in bad if not v.accepted and v.reason in BAD_FILE_REASONS]
            if broken:
                raise _refusal(broken)
            mode = "mms" if sources else "sms"
            items: list[PreparedMedia] = []
            if sources and mms_ok:
                try:
                    items = self._fit_all(sources, policy)
                except OutboundError as exc:
                    if request.fallback != "link":
                        raise
                    notes.append(f"sent as links: {exc}")
                    mode = "link"
            elif sources:
                notes.append(f"sent as links: MMS is not carried to {request.to}")
                mode = "link"
            if mode == "link":
                items = [self._for_link(s, policy) for s in sources]
            body = request.body
            if host and items:
                ttl = link_ttl or (FALLBACK_LINK_TTL if mode == "link" else MMS_LINK_TTL)
                items = [
                    self._host(item, s.payload, ttl) for item, s in zip(items, sources, strict=True)
                ]
                if mode == "link":
                    body = "\n".join(filter(None, [body, *(m.url or "" for m in items)]))
        if len(body) > MAX_BODY:
            raise OutboundError(
                f"with the links the body is {len(body)} characters, over Twilio's {MAX_BODY}; "
                "shorten the body or send fewer files (set RECEIVER_PUBLIC_URL for short links)",
                "body_too_long",
            )
        prepared = PreparedMessage(request, mode, body, tuple(items), tuple(notes))
        if host and items:
            self.preflight(prepared)
        return prepared

    def _open(self, index: int, item: str, request: OutboundRequest, stack: ExitStack) -> _Source:
        """Open an attachment (download a URL through the fetcher) and inspect its bytes."""
        if item.startswith(("http://", "https://")):
            try:
                result = self.fetcher.fetch(item, max_bytes=self.settings.max_media_bytes)
            except FetchError as exc:
                fix = {
                    "blocked_host": "use a public http(s) URL",
                    "too_large": "an MMS carries at most 5 MB; send a smaller file (downloads "
                    "are capped by RECEIVER_MAX_MEDIA_BYTES)",
                }.get(exc.reason, "check that the URL works without a login")
                raise OutboundError(
                    f"media {index + 1} ({_safe(item)}): {exc}; {fix}", exc.reason
                ) from None
            fp: BinaryIO = stack.enter_context(result.file)
            return _Source(index, item, fp, inspect(fp, result.content_type, size=result.size))
        if "://" in item or not request.allow_files:
            raise OutboundError(
                f"media {index + 1} ({_safe(item)}) must be an http(s) URL", "invalid_media"
            )
        path = Path(item).expanduser()
        if not path.is_file():
            raise OutboundError(f"media {index + 1}: no such file {item}", "invalid_media")
        size = path.stat().st_size
        fh: BinaryIO = stack.enter_context(path.open("rb"))
        declared = mimetypes.guess_type(path.name)[0]
        return _Source(index, str(path), fh, inspect(fh, declared, size=size))

    def _fit_all(self, sources: Sequence[_Source], policy: Policy) -> list[PreparedMedia]:
        """Share the message budget between images, fit each into its share; others as-is."""
        problems: list[tuple[_Source, str, str]] = []
        fixed_total = 0
        images: list[_Source] = []
        for src in sources:
            verdict = check(src.info, policy)
            if src.info.detected_type in policy.shrinkable_types and (
                verdict.accepted or verdict.fixable
            ):
                images.append(src)
            elif verdict.accepted:
                fixed_total += src.info.size_bytes
            else:
                problems.append(
                    (src, verdict.reason or "unsupported_type", _advice(verdict.detail, src.info))
                )
        if problems:
            raise _refusal_lines(problems)
        if fixed_total > policy.max_message_bytes:
            raise OutboundError(
                f"the attachments total {fixed_total:,} bytes, over the "
                f"{policy.max_message_bytes:,}-byte MMS limit (Twilio error 11751); send fewer "
                "or smaller files, or use --fallback link",
                "message_too_large",
            )
        room = policy.max_message_bytes - fixed_total
        if images and room < 10_000:
            raise OutboundError(
                f"the other attachments take {fixed_total:,} bytes of the "
                f"{policy.max_message_bytes:,}-byte MMS limit; no room is left for images",
                "message_too_large",
            )
        shares = _water_fill(
            [s.info.size_bytes for s in images],
            [s.info.detected_type not in policy.full_size_types for s in images],
            room,
        )
        out: dict[int, PreparedMedia] = {}
        for src, share in zip(images, shares, strict=True):
            out[src.index] = self._fit_image(src, min(share, policy.file_limit("image/jpeg")))
        for src in sources:
            if src.index not in out:
                out[src.index] = self._as_is(src)
        items = [out[s.index] for s in sources]
        total = sum(m.size for m in items)
        if total > policy.max_message_bytes:  # a guard: shares add up to the room
            raise OutboundError(
                f"prepared media total {total:,} bytes, over {policy.max_message_bytes:,}",
                "message_too_large",
            )
        return items

    def _fit_image(self, src: _Source, budget: int) -> PreparedMedia:
        info = src.info
        try:
            result = fit(src.file, info, budget_bytes=budget)
        except MediaError as exc:
            raise OutboundError(
                f"media {src.index + 1} ({_safe(src.source)}): {exc}", exc.reason
            ) from None
        derived = result.derived
        changes: list[str] = []
        converted = derived.content_type != info.detected_type
        if converted:
            changes.append(f"converted {info.detected_type} to {derived.content_type}")
        if (derived.width, derived.height) != (info.width, info.height) and result.scale < 0.999:
            changes.append(
                f"resized {info.width}x{info.height} to {derived.width}x{derived.height}"
                + (f" at quality {result.quality}" if result.quality else "")
            )
        elif result.encode_passes and not converted:
            changes.append(
                "re-encoded" + (f" at quality {result.quality}" if result.quality else "")
            )
        if len(derived.data) != info.size_bytes:
            changes.append(f"{info.size_bytes:,} -> {len(derived.data):,} bytes")
        if info.detected_type != "image/gif":  # GIF carries no EXIF
            changes.append("metadata (EXIF/GPS) removed")
        # The result is inspected like any upload: what is sent is what its bytes say.
        check_info = inspect(io.BytesIO(derived.data), derived.content_type, size=len(derived.data))
        if check_info.problem or check_info.detected_type != derived.content_type:
            raise OutboundError(
                f"media {src.index + 1}: the converted file did not verify "
                f"({check_info.problem or check_info.detected_type})",
                "corrupt",
            )
        src.output = io.BytesIO(derived.data)
        return PreparedMedia(
            source=src.source,
            content_type=derived.content_type,
            kind="image",
            size=len(derived.data),
            sha256=hashlib.sha256(derived.data).hexdigest(),
            filename=short_filename(src.source, derived.extension, src.index),
            width=derived.width,
            height=derived.height,
            changes=tuple(changes),
        )

    def _for_link(self, src: _Source, policy: Policy) -> PreparedMedia:
        """An attachment sent as a link: images still lose EXIF/GPS and become JPEG/PNG."""
        src.output = None
        if src.info.size_bytes > self.settings.max_media_bytes:
            raise OutboundError(
                f"media {src.index + 1} ({_safe(src.source)}) is {src.info.size_bytes:,} bytes, "
                f"too big to host as a link (RECEIVER_MAX_MEDIA_BYTES is "
                f"{self.settings.max_media_bytes:,})",
                "too_large",
            )
        if src.info.detected_type in policy.shrinkable_types:
            budget = max(self.settings.max_media_bytes, src.info.size_bytes)
            return self._fit_image(src, budget)
        return self._as_is(src)

    def _as_is(self, src: _Source) -> PreparedMedia:
        """An attachment sent unchanged (its detected type, its bytes)."""
        info = src.info
        src.file.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: src.file.read(1 << 20), b""):
            digest.update(chunk)
        src.file.seek(0)
        return PreparedMedia(
            source=src.source,
            content_type=info.detected_type,
            kind=info.kind,
            size=info.size_bytes,
            sha256=digest.hexdigest(),
            filename=short_filename(src.source, info.extension, src.index),
            width=info.width,
            height=info.height,
        )

    # -- hosting and pre-flight ------------------------------------------------------------

    def _host(self, item: PreparedMedia, fp: BinaryIO, ttl: int) -> PreparedMedia:
        """Store a prepared file and give it a URL Twilio can fetch without credentials."""
        public = self.settings.public_url
        if not public and not self.settings.storage_url.startswith("s3://"):
            raise OutboundError(
                "Twilio must be able to fetch the media from this service, but "
                "RECEIVER_PUBLIC_URL is not set: set it to the public https URL of this "
                "service (e.g. your ngrok URL), keep `mms-receiver serve` running, or use S3 "
                "storage (RECEIVER_STORAGE_URL=s3://bucket)",
                "no_public_url",
            )
        extension = types.extension_of(item.content_type)
        key, stem = self.links.new_key(extension)
        expires_at = int(time.time()) + ttl
        fp.seek(0)
        try:
            self.store.put(
                key,
                fp,
                content_type=item.content_type,
                size=item.size,
                metadata={"sha256": item.sha256, "filename": item.filename},
            )
        except (StorageError, ValueError) as exc:
            raise OutboundError(f"cannot store the prepared media: {exc}", "storage") from None
        if public:
            url = f"{public}/m/{self.links.sign(stem, expires_at)}"
        else:
            presigned = self.store.presigned_url(
                key,
                expires=min(ttl, 7 * 24 * 3600),
                filename=item.filename,
                content_type=item.content_type,
                disposition="inline",
            )
            assert presigned is not None
            url = presigned
        return replace(item, key=key, url=url, expires_at=expires_at)

    def preflight(self, prepared: PreparedMessage) -> None:
        """HEAD and GET each hosted URL without credentials, as Twilio will, and compare.

        Raises OutboundError (reason ``preflight_failed``) naming the URL, what
        was wrong and the fix; the message is then not sent.
        """
        total = 0
        for item in prepared.media:
            assert item.url is not None
            problems = self._preflight_one(item)
            if problems:
                self._discard(prepared.media)
                raise OutboundError(
                    f"pre-flight of {_safe(item.url)} failed: {'; '.join(problems)}. Twilio "
                    "fetches this URL with HEAD and GET and would refuse it (11200/12300): "
                    "check that RECEIVER_PUBLIC_URL reaches this service and that `serve` is "
                    "running",
                    "preflight_failed",
                )
            total += item.size
        limit = mms_policy(prepared.request.carrier_budget).max_message_bytes
        if prepared.mode == "mms" and total > limit:
            self._discard(prepared.media)
            raise OutboundError(
                f"hosted media total {total:,} bytes, over {limit:,}", "message_too_large"
            )

    def _preflight_one(self, item: PreparedMedia) -> list[str]:
        assert item.url is not None
        fetcher = self._preflight_fetcher(item.url)
        try:
            flight = fetcher.head_and_get(item.url, max_bytes=item.size + 1)
        except FetchError as exc:
            return [str(exc)]
        problems: list[str] = []
        with flight.result.file:
            presigned = not item.url.startswith(self.settings.public_url or "\x00")
            for problem in flight.problems:
                # A SigV4 presigned GET URL refuses HEAD on AWS itself; Twilio copes.
                if presigned and problem.startswith("HEAD ") and "answered HTTP 403" in problem:
                    continue
                problems.append(problem)
            served = (flight.result.content_type or "").split(";", 1)[0].strip().lower()
            if served != item.content_type:
                problems.append(f"served as {served or 'no type'}, prepared as {item.content_type}")
            if flight.result.sha256 != item.sha256:
                problems.append("the bytes served are not the prepared file")
            if flight.result.size != item.size:
                problems.append(f"{flight.result.size:,} bytes served, {item.size:,} prepared")
        return problems

    def _preflight_fetcher(self, url: str) -> Fetcher:
        """A credential-less fetcher that may reach this URL's own host (we issued it)."""
        parts = urlsplit(url)
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = f"{host}:{port}"
        if origin not in self._preflight_fetchers:
            self._preflight_fetchers[origin] = Fetcher(
                FetchConfig.outbound(self.settings).allowing(origin)
            )
        return self._preflight_fetchers[origin]

    def _discard(self, items: Iterable[PreparedMedia]) -> None:
        for item in items:
            if item.key:
                try:
                    self.store.delete(item.key)
                except (StorageError, ValueError) as exc:
                    log.warning("could not remove unsent prepared media %s: %s", item.key, exc)

    # -- sending ------------------------------------------------------------------------------

    def send(
        self,
        request: OutboundRequest,
        *,
        dry_run: bool = False,
        cache: dict[Any, PreparedMessage] | None = None,
        wait_in_flight: bool = False,
    ) -> SendResult:
        """Send one message (idempotent on `request.idempotency_key`).

        Raises OutboundError when it cannot be sent (the reason names the fix),
        TwilioApiError when Twilio refused it, ConfigError when credentials or
        the public URL are missing. A key that was already sent returns its
        row with `duplicate` set, and nothing goes to Twilio.
        """
        validate_request(request)
        if dry_run:
            prepared = self.prepare(request, host=False)
            return SendResult(None, request.idempotency_key, None, "dry-run", False, prepared)
        rest = self.rest  # fails (ConfigError) before anything is recorded
        row, created = self.outbox.reserve(
            {
                "idempotency_key": request.idempotency_key,
                "to_addr": request.to,
                "from_addr": request.from_,
                "messaging_service_sid": request.messaging_service_sid,
                "body": request.body,
                "media": [{"source": _safe(m)} for m in request.media],
                "fallback": request.fallback,
            }
        )
        if not created:
            settled = self._settle_existing(row, wait=wait_in_flight)
            if settled is not None:
                return settled
        row_id = int(row["id"])
        if self.index.is_opted_out(
            request.to, [s for s in (request.from_, request.messaging_service_sid) if s]
        ):
            message = (
                f"{request.to} opted out (replied STOP) of messages from "
                f"{request.sender}; they must text START before you can message them"
            )
            self.outbox.finish(row_id, "refused", error_code=21610, error_message=message)
            raise OutboundError(message, "opted_out")
        try:
            prepared = self._prepared(request, cache)
        except (OutboundError, ConfigError) as exc:
            self.outbox.finish(row_id, "refused", error_message=str(exc))
            raise
        self.outbox.update_prepared(
            row_id,
            body=prepared.body,
            media=[m.to_json() for m in prepared.media],
            fallback="link" if prepared.mode == "link" else request.fallback,
        )
        self.limiter.acquire(request.sender, prepared.segments)
        if not self.outbox.claim(row_id):
            current = self.outbox.get(row_id) or row
            return self._result(current, duplicate=True, prepared=prepared)
        return self._submit(rest, row_id, request, prepared)

    def _prepared(
        self, request: OutboundRequest, cache: dict[Any, PreparedMessage] | None
    ) -> PreparedMessage:
        """Prepare, reusing hosted media across rows of a bulk send with the same attachments."""
        if cache is None or not request.media:
            return self.prepare(request)
        key = (request.media, request.carrier_budget, request.fallback, carries_mms(request.to))
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = self.prepare(replace(request, body=""))
        body = request.body
        if hit.mode == "link":
            body = "\n".join(filter(None, [body, *(m.url or "" for m in hit.media)]))
            if len(body) > MAX_BODY:
                raise OutboundError(
                    f"with the links the body is {len(body)} characters, over {MAX_BODY}",
                    "body_too_long",
                )
        return replace(hit, request=request, body=body)

    def _submit(
        self, rest: TwilioRest, row_id: int, request: OutboundRequest, prepared: PreparedMessage
    ) -> SendResult:
        try:
            message = rest.create_message(
                to=request.to,
                from_=request.from_,
                messaging_service_sid=request.messaging_service_sid,
                body=prepared.body or None,
                media_urls=prepared.media_urls,
                status_callback=self.status_callback,
                validity_period=request.validity_period,
            )
        except TwilioRestError as exc:
            self._after_error(row_id, request, exc)
            raise
        except Exception:
            # Unknown outcome: the row stays `submitting` and is resolved before any resend.
            log.exception("sending outbound row %s failed unexpectedly", row_id)
            raise
        row = self.outbox.mark_submitted(row_id, message)
        log.info(
            "sent %s to %s (%s, %d media)",
            row["sid"],
            _mask(request.to),
            prepared.mode,
            len(prepared.media_urls),
        )
        return self._result(row, duplicate=False, prepared=prepared)

    def _after_error(self, row_id: int, request: OutboundRequest, exc: TwilioRestError) -> None:
        """Record what a failed create means for the row (and the opt-out list)."""
        if exc.maybe_sent:
            return  # unknown outcome: stays `submitting`, resolved before any resend
        if exc.code == 21610:
            self.index.set_opt_out(
                request.to,
                request.messaging_service_sid or request.from_ or "*",
                opted_out=True,
                keyword="STOP",
                source="twilio-21610",
            )
        if exc.status in _REJECTING_STATUSES:
            self.outbox.finish(row_id, "rejected", error_code=exc.code, error_message=str(exc))
        else:
            # 401/403, throttling or server errors after retries: nothing was created.
            self.outbox.release(row_id, error_message=str(exc))

    def _settle_existing(self, row: dict[str, Any], *, wait: bool) -> SendResult | None:
        """For a known key: the earlier result, or None when it should be (re)tried."""
        status = row["status"]
        if row["sid"]:
            return self._result(row, duplicate=True)
        if status == "submitting":
            resolved = self._resolve(row, wait=wait)
            if resolved is not None:
                return self._result(resolved, duplicate=True)
            return None
        if status in ("refused", "rejected"):
            # Nothing was created on Twilio: trying again cannot send twice.
            self.outbox.retry(int(row["id"]))
        return None

    def _resolve(self, row: dict[str, Any], *, wait: bool) -> dict[str, Any] | None:
        """A row left `submitting` by an interruption: adopt Twilio's message if it exists,
        else free the row for a new attempt.

        A request cut off a moment ago may still be on its way into Twilio's
        records, so a row claimed less than `in_flight_grace` seconds ago is
        only freed once that time has passed: with `wait` this waits, otherwise
        it raises OutboundError(reason "in_flight") saying when to try again.
        """
        found = self._find_sent(row)
        if found is not None:
            return found
        age = (datetime.now(UTC) - row["updated_at"]).total_seconds()
        remaining = self.in_flight_grace - age
        if remaining > 0:
            if not wait:
                raise OutboundError(
                    f"an earlier attempt to send this message started {age:.0f}s ago and may "
                    f"still reach Twilio; run again in {remaining:.0f}s",
                    "in_flight",
                )
            time.sleep(remaining)
            found = self._find_sent(row)
            if found is not None:
                return found
        self.outbox.release(int(row["id"]))
        return None

    def _find_sent(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Twilio's record of a row's message (same recipient, sender and body), adopted."""
        since = row["created_at"] - timedelta(minutes=5)
        for message in self.rest.list_messages(
            to=row["to_addr"], from_=row["from_addr"], date_sent_after=since
        ):
            if (
                message.get("direction", "").startswith("outbound")
                and (message.get("body") or "") == (row["body"] or "")
                and self.outbox.by_sid(message["sid"]) is None
            ):
                log.info(
                    "outbound row %s was sent before an interruption: adopting %s",
                    row["id"],
                    message["sid"],
                )
                return self.outbox.adopt(int(row["id"]), message)
        return None

    def resolve_unknown(self) -> tuple[int, int]:
        """Resolve rows left `submitting` by an interruption: (resolved, still in flight)."""
        resolved = waiting = 0
        for row in self.outbox.in_states(["submitting"]):
            try:
                self._resolve(row, wait=False)
                resolved += 1
            except OutboundError:
                waiting += 1
        return resolved, waiting

    @staticmethod
    def _result(
        row: dict[str, Any], *, duplicate: bool, prepared: PreparedMessage | None = None
    ) -> SendResult:
        return SendResult(
            row_id=int(row["id"]),
            idempotency_key=row.get("idempotency_key"),
            sid=row.get("sid"),
            status=str(row["status"]),
            duplicate=duplicate,
            prepared=prepared,
            error_code=row.get("error_code"),
            error_message=row.get("error_message"),
        )

    def send_bulk(
        self,
        requests: Iterable[OutboundRequest],
        *,
        on_row: Callable[[OutboundRequest, SendResult | None, Exception | None], None]
        | None = None,
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
        on_row: Callable[[OutboundRequest, SendResult | None, Exception | None], None] | None,
        deferred: list[OutboundRequest] | None,
    ) -> bool:
        """Send one row and count it; False when the run must stop."""
        result: SendResult | None = None
        error: Exception | None = None
        try:
            result = self.send(request, cache=cache, wait_in_flight=deferred is None)
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
            isinstance(error, TwilioRestError) and error.status in _REJECTING_STATUSES
        ):
            summary.refused += 1
            summary.problems.append(f"{_mask(request.to)}: {error}")
        else:
            summary.failed += 1
            summary.aborted = str(error)
            summary.problems.append(f"{_mask(request.to)}: {error}")
        if on_row is not None:
            on_row(request, result, error)
        return summary.aborted is None

    # -- status callbacks ------------------------------------------------------------------

    def handle_status(self, params: Sequence[tuple[str, str]]) -> str | None:
        """Store a verified status callback; the message's status only moves forward.

        Returns the message's status afterwards (None for a MessageSid not sent
        from here). Raises WebhookError for a malformed callback (the view answers 400).
        """
        event = parse_status(params)
        status = self.outbox.record_status(event)
        if event.error_code == 21610 and event.to is not None:
            row = self.outbox.by_sid(event.message_sid)
            sender = (row or {}).get("messaging_service_sid") or (
                event.from_.address if event.from_ else "*"
            )
            self.index.set_opt_out(
                event.to.address,
                sender,
                opted_out=True,
                keyword="STOP",
                source="twilio-21610",
                message_sid=event.message_sid,
            )
        return status

    def stats(self, *, days: int | None = None) -> dict[str, Any]:
        """Delivery figures for `GET /api/stats`."""
        since = datetime.now(UTC) - timedelta(days=days) if days else None
        return {"outbound": self.outbox.stats(since=since)}

    def message(self, sid_or_id: str) -> dict[str, Any] | None:
        """One outbound message with its status events (by MessageSid or row id)."""
        row = (
            self.outbox.get(int(sid_or_id))
            if sid_or_id.isdigit()
            else self.outbox.by_sid(sid_or_id)
        )
        if row is None:
            return None
        row["events"] = self.outbox.events(row["sid"]) if row["sid"] else []
        return row

    # -- reconciliation --------------------------------------------------------------------

    def inbound_since(
        self, since: timedelta, *, include_text: bool = False
    ) -> list[dict[str, Any]]:
        """Inbound messages Twilio received in the last `since` (with media, unless
        `include_text`), newest first, from its REST API."""
        after = datetime.now(UTC) - since
        return [
            m
            for m in self.rest.list_messages(date_sent_after=after)
            if m.get("direction") == "inbound"
            and (include_text or int(m.get("num_media") or 0) > 0)
        ]

    def reconcile(
        self, messages: Iterable[dict[str, Any]], *, deadline: float = 60.0
    ) -> ReconcileSummary:
        """Ingest the listed messages the index lacks (webhooks missed while down).

        Each missing message goes through the pipeline's own ingest and media
        processing, as if its webhook had arrived, so running this twice
        ingests nothing the second time.
        """
        if self.pipeline is None:
            raise ConfigError("reconcile needs the inbound pipeline (build Outbound from services)")
        summary = ReconcileSummary()
        for message in messages:
            summary.listed += 1
            try:
                if self.index.get_message(str(message["sid"])) is not None:
                    summary.known += 1
                elif self._ingest(message, deadline):
                    summary.ingested += 1
                else:
                    summary.known += 1
            except (ReceiverError, WebhookError) as exc:
                summary.failed += 1
                summary.problems.append(f"{message.get('sid')}: {exc}")
        return summary

    def _ingest(self, message: dict[str, Any], deadline: float) -> bool:
        assert self.pipeline is not None
        sid = str(message["sid"])
        media = self.rest.list_media(sid) if int(message.get("num_media") or 0) else []
        params = [
            ("MessageSid", sid),
            ("SmsMessageSid", sid),
            ("SmsSid", sid),
            ("AccountSid", str(message.get("account_sid") or self.rest.account_sid)),
            ("From", str(message.get("from") or "")),
            ("To", str(message.get("to") or "")),
            ("Body", str(message.get("body") or "")),
            ("NumMedia", str(len(media))),
            ("NumSegments", str(message.get("num_segments") or "1")),
            ("SmsStatus", "received"),
            ("ApiVersion", str(message.get("api_version") or "2010-04-01")),
        ]
        if message.get("messaging_service_sid"):
            params.append(("MessagingServiceSid", str(message["messaging_service_sid"])))
        for i, item in enumerate(media):
            params.append((f"MediaContentType{i}", str(item.get("content_type") or "")))
            params.append((f"MediaUrl{i}", self.rest.media_url(sid, str(item["sid"]))))
        msg = parse_inbound(params)
        result = self.pipeline.ingest(msg)
        # The same two steps as the webhook: a created message's items are leased to us.
        self.pipeline.process_message(sid, deadline=deadline, ingested=result)
        log.info("reconciled %s from Twilio: %s", sid, "ingested" if result.created else "known")
        return result.created

    def refresh_statuses(self, since: timedelta) -> int:
        """Bring outbound messages still in flight up to Twilio's record (their callbacks
        may have been missed too); returns how many moved."""
        after = datetime.now(UTC) - since
        moved = 0
        rows = [
            r
            for r in self.outbox.in_states(["accepted", "scheduled", "queued", "sending", "sent"])
            if r["sid"] and r["created_at"] >= after
        ]
        for row in rows:
            try:
                message = self.rest.fetch_message(row["sid"])
            except TwilioApiError as exc:
                log.warning("cannot refresh %s: %s", row["sid"], exc)
                continue
            status = str(message.get("status") or "")
            if status != row["status"]:
                params = [
                    ("MessageSid", row["sid"]),
                    ("MessageStatus", status),
                    ("AccountSid", str(message.get("account_sid") or "")),
                ]
                if message.get("error_code"):
                    params.append(("ErrorCode", str(message["error_code"])))
                before = row["status"]
                after_status = self.handle_status([p for p in params if p[1]])
                moved += int(after_status != before)
        return moved


# -- module functions ----------------------------------------------------------------------


def _water_fill(sizes: Sequence[int], converts: Sequence[bool], room: int) -> list[int]:
    """Split `room` bytes between images: files that fit keep their size, files to be
    converted (whose new size is unknown) and files too big share the rest equally."""
    shares = [0] * len(sizes)
    left = room
    order = sorted(range(len(sizes)), key=lambda i: (converts[i], sizes[i]))
    for n, i in enumerate(order):
        fair = left // (len(sizes) - n)
        shares[i] = fair if converts[i] else min(sizes[i], fair)
        left -= shares[i]
    return shares


def _advice(detail: str, info: MediaInfo) -> str:
    if info.kind in ("video", "audio"):
        return (
            f"{detail}; Twilio does not resize {info.kind}: compress it under the limit, "
            "or use --fallback link"
        )
    return f"{detail}; use --fallback link to send it as a link"


def _refusal(items: Sequence[tuple[_Source, Any]]) -> OutboundError:
    return _refusal_lines([(s, v.reason or "invalid", v.detail) for s, v in items])


def _refusal_lines(items: Sequence[tuple[_Source, str, str]]) -> OutboundError:
    fixes = {
        "empty": "the file is empty; check it was saved completely",
        "corrupt": "the file is damaged or truncated; export it again",
        "decompression_bomb": "the image expands to too many pixels or frames; send a smaller one",
        "type_mismatch": "its declared type does not match its bytes; fix the server's "
        "Content-Type or the file extension",
    }
    lines = []
    for src, reason, detail in items:
        fix = fixes.get(reason)
        text = f"{detail} ({fix})" if fix and detail else (detail or fix or reason)
        lines.append(f"media {src.index + 1} ({_safe(src.source)}): {reason}: {text}")
    return OutboundError("cannot send: " + "; ".join(lines), items[0][1])


def _safe(url: str) -> str:
    """A media reference for messages: no query string (presigned URLs carry secrets)."""
    if "://" not in url:
        return Path(url).name
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _mask(number: str) -> str:
    """A phone number for logs: the last four digits only."""
    return f"…{number[-4:]}" if len(number) > 4 else number
