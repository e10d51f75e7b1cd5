"""The media rules as data, and `check()`, which turns a file's facts into a verdict.

Two families of policy exist:

* inbound (`inbound_policy`): what the service stores from received messages.
  Accepted: raster photos (JPEG, PNG, GIF, HEIC/HEIF, WebP, BMP, TIFF, AVIF),
  every audio and video type in the type table, vCards, PDF, Office and
  OpenDocument files, Wallet passes, plain text, CSV, RTF and calendars.
  Refused as ``unsupported_type``: markup that a browser would execute (HTML,
  SVG, XML, JavaScript), JSON (an API error body is not an attachment),
  executables, archives (they hide any of the above from inspection) and
  bytes nobody can identify.
* outbound MMS (`mms_policy`): at most 10 files and 5 MB per message
  (https://www.twilio.com/docs/api/errors/21623,
  https://www.twilio.com/docs/api/errors/11751); JPEG/PNG/GIF up to the
  message limit (Twilio transcodes them for the handset); every other accepted
  type up to 600 KB (carriers deliver them untouched, and the smallest carrier
  limit is 600 KB: https://support.twilio.com/hc/en-us/articles/360018832773);
  an optional per-carrier budget lowers both. HEIC/HEIF, WebP, BMP, TIFF and
  AVIF are not sent as they are even where Twilio would pass them on: handsets
  show them inconsistently and Twilio does not resize them, so the verdict says
  they are fixable (converted to JPEG by `transform.fit_for_mms`).

Sizes use decimal units (5 MB = 5,000,000 bytes), the smaller reading of
Twilio's limits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from receiver.media import types
from receiver.media.inspect import MediaInfo

REASONS = (
    "type_mismatch",
    "unsupported_type",
    "too_large",
    "message_too_large",
    "decompression_bomb",
    "corrupt",
    "empty",
    "blocked_host",
    "fetch_failed",
    "malware",
)

MMS_MAX_FILES = 10
MMS_MAX_MESSAGE_BYTES = 5_000_000
#: Twilio's advice for types it does not transcode (the OpenAPI text says 500 KB for
#: "other" types; the help-centre carrier table's lowest limit is 600 KB, which is the
#: figure Twilio recommends). Carriers' budgets lower it further through mms_policy().
MMS_OTHER_MAX_FILE_BYTES = 600_000

#: Types Twilio formats for the handset; the message limit applies to them as files.
MMS_FULL_SUPPORT = frozenset({"image/jpeg", "image/png", "image/gif"})
#: Images transform.fit_for_mms converts to JPEG (or PNG when transparent).
CONVERTIBLE_IMAGES = frozenset(
    {"image/heic", "image/heif", "image/webp", "image/bmp", "image/tiff", "image/avif"}
)

_INBOUND_IMAGES = MMS_FULL_SUPPORT | CONVERTIBLE_IMAGES
_MEDIA = frozenset(t.mime for t in types.TYPES if t.kind in ("audio", "video"))
_OFFICE = frozenset(
    {
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    }
)
_OPEN_DOCUMENT = frozenset(
    {
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
    }
)
_INBOUND_DOCUMENTS = (
    _OFFICE
    | _OPEN_DOCUMENT
    | frozenset(
        {
            "text/vcard",
            "application/pdf",
            "text/plain",
            "text/csv",
            "text/rtf",
            "text/calendar",
            "application/vnd.apple.pkpass",
        }
    )
)
#: Carrier SMIL layouts: kept (small, shown with the message), never counted as attachments.
_PRESENTATIONS = frozenset(t.mime for t in types.TYPES if t.kind == "presentation")
INBOUND_TYPES = _INBOUND_IMAGES | _MEDIA | _INBOUND_DOCUMENTS | _PRESENTATIONS

#: The types Twilio accepts for MMS, canonical spellings; "accepted" means Twilio passes them
#: through untouched (https://www.twilio.com/docs/messaging/guides/accepted-mime-types).
MMS_TYPES = (
    MMS_FULL_SUPPORT
    | frozenset(
        {
            "audio/basic",
            "audio/l24",
            "audio/mp4",
            "audio/mpeg",
            "audio/ogg",
            "audio/vnd.rn-realaudio",
            "audio/wav",
            "audio/3gpp",
            "audio/3gpp2",
            "audio/ac3",
            "audio/webm",
            "audio/amr",
            "audio/aac",
            "video/mpeg",
            "video/mp4",
            "video/quicktime",
            "video/webm",
            "video/3gpp",
            "video/3gpp2",
            "video/3gpp-tt",
            "video/h261",
            "video/h263",
            "video/h264",
            "text/vcard",
            "text/csv",
            "text/rtf",
            "text/calendar",
            "application/pdf",
            "application/vnd.apple.pkpass",
        }
    )
    | _OFFICE
)

#: WhatsApp media (https://www.twilio.com/docs/whatsapp/guidance-whatsapp-media-messages):
#: images JPEG/PNG up to 5 MB; audio (OGG, AMR, 3GP, AAC, MPEG), video (MP4, 3GP),
#: documents (PDF, DOC, DOCX, PPTX, XLSX) and vCards up to 16 MB
#: (https://www.twilio.com/docs/api/errors/11751); one file per message
#: (https://support.twilio.com/hc/en-us/articles/360017961894). GIF is not among the
#: types WhatsApp plays (https://www.twilio.com/docs/messaging/guides/accepted-mime-types),
#: so an animation is sent as an MP4 (`transform.animation_to_mp4`) or refused with the fix.
WHATSAPP_MAX_BYTES = 16_000_000
WHATSAPP_MAX_IMAGE_BYTES = 5_000_000
WHATSAPP_MAX_FILES = 1
WHATSAPP_IMAGES = frozenset({"image/jpeg", "image/png"})
WHATSAPP_TYPES = WHATSAPP_IMAGES | frozenset(
    {
        "audio/ogg",
        "audio/amr",
        "audio/3gpp",
        "audio/aac",
        "audio/mpeg",
        "video/mp4",
        "video/3gpp",
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "text/vcard",
    }
)

#: Per-channel caps on an inbound message's media, under RECEIVER_MAX_MESSAGE_BYTES:
#: WhatsApp carries at most 16 MB per message (https://www.twilio.com/docs/api/errors/11751,
#: https://www.twilio.com/docs/whatsapp/guidance-whatsapp-media-messages), so more is not
#: a WhatsApp message's media.
INBOUND_CHANNEL_CAPS = {"whatsapp": WHATSAPP_MAX_BYTES}


def inbound_message_cap(configured: int, channel: str | None) -> int:
    """The byte cap of one inbound message's media on `channel`."""
    return min(configured, INBOUND_CHANNEL_CAPS.get(channel or "", configured))


# Kinds a declaration may confuse without anything being wrong: audio and video
# share containers (MP4, 3GPP, Ogg, WebM, MPEG), so a voice memo declared
# audio/mp4 is often video/mp4 to libmagic; some phones send vCards as text/plain.
_COMPATIBLE_KINDS = (
    frozenset({"audio", "video"}),
    # Carriers label SMIL layouts text/xml or text/plain as often as application/smil.
    frozenset({"document", "contact", "presentation"}),
)


@dataclass(frozen=True)
class Verdict:
    """The outcome of `check()`: accepted, or refused with a machine-readable reason.

    `fixable` (outbound only): `transform.fit_for_mms` can turn the file into one
    that passes (convert to JPEG, resize, shrink an animation).
    """

    accepted: bool
    reason: str | None = None
    detail: str = ""
    fixable: bool = False

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in REASONS:
            raise ValueError(f"Verdict.reason: unknown reason {self.reason!r}; use one of REASONS")
        if self.accepted == (self.reason is not None):
            raise ValueError("Verdict: a refusal needs a reason and an acceptance has none")


@dataclass(frozen=True)
class Policy:
    """What a direction of traffic accepts: types, per-file, per-message and count limits."""

    name: str
    accepted_types: frozenset[str]
    max_file_bytes: int
    max_message_bytes: int
    max_files: int
    #: Per-file limit for accepted types outside `full_size_types` (None: max_file_bytes).
    other_max_file_bytes: int | None = None
    #: Types that get `max_file_bytes`; when empty, every type does.
    full_size_types: frozenset[str] = frozenset()
    #: Refused types that transform.fit_for_mms can convert into an accepted one.
    convertible_types: frozenset[str] = frozenset()
    #: Types that transform.fit_for_mms can make smaller (resize, recompress, shrink).
    shrinkable_types: frozenset[str] = frozenset()
    #: Whether animated images (GIF, APNG, animated WebP) may be sent as animations.
    animations: bool = True

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_message_bytes", "max_files"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Policy.{name}: must be a positive integer, got {value!r}")
        if self.other_max_file_bytes is not None and self.other_max_file_bytes <= 0:
            raise ValueError(
                f"Policy.other_max_file_bytes: must be positive or None, "
                f"got {self.other_max_file_bytes!r}"
            )
        unknown = {t for t in self.accepted_types if types.normalize(t) != t}
        if unknown:
            raise ValueError(
                f"Policy.accepted_types: use canonical lower-case types, not {sorted(unknown)}"
            )

    def file_limit(self, content_type: str) -> int:
        """The per-file byte limit for a (canonical) content type."""
        if not self.full_size_types or content_type in self.full_size_types:
            return self.max_file_bytes
        if self.other_max_file_bytes is None:
            return self.max_file_bytes
        return min(self.other_max_file_bytes, self.max_file_bytes)


def inbound_policy(max_file_bytes: int, max_message_bytes: int) -> Policy:
    """The policy for received media, with the configured per-file and per-message caps."""
    return Policy(
        name="inbound",
        accepted_types=INBOUND_TYPES,
        max_file_bytes=max_file_bytes,
        max_message_bytes=max_message_bytes,
        # Twilio surfaces at most 10 MediaUrlN per inbound message.
        max_files=MMS_MAX_FILES,
    )


def mms_policy(carrier_budget: int | None = None) -> Policy:
    """Twilio's outbound MMS rules, optionally under a carrier's byte budget for the message.

    `carrier_budget` (bytes) caps the whole message and every file in it, e.g.
    600_000 for AT&T toll-free; None keeps Twilio's own 5 MB.
    """
    if carrier_budget is not None and carrier_budget <= 0:
        raise ValueError(f"carrier_budget: must be a positive byte count, got {carrier_budget!r}")
    message = MMS_MAX_MESSAGE_BYTES
    other = MMS_OTHER_MAX_FILE_BYTES
    name = "mms"
    if carrier_budget is not None:
        message = min(message, carrier_budget)
        other = min(other, carrier_budget)
        name = f"mms/{carrier_budget}"
    return Policy(
        name=name,
        accepted_types=MMS_TYPES,
        max_file_bytes=message,
        max_message_bytes=message,
        max_files=MMS_MAX_FILES,
        other_max_file_bytes=other,
        full_size_types=MMS_FULL_SUPPORT,
        convertible_types=CONVERTIBLE_IMAGES,
        shrinkable_types=MMS_FULL_SUPPORT | CONVERTIBLE_IMAGES,
    )


def whatsapp_policy() -> Policy:
    """WhatsApp's outbound rules (see WHATSAPP_TYPES): 16 MB, images 5 MB, one file."""
    return Policy(
        name="whatsapp",
        accepted_types=WHATSAPP_TYPES,
        max_file_bytes=WHATSAPP_MAX_BYTES,
        max_message_bytes=WHATSAPP_MAX_BYTES,
        max_files=WHATSAPP_MAX_FILES,
        other_max_file_bytes=WHATSAPP_MAX_IMAGE_BYTES,
        full_size_types=WHATSAPP_TYPES - WHATSAPP_IMAGES,
        convertible_types=CONVERTIBLE_IMAGES,
        shrinkable_types=WHATSAPP_IMAGES | CONVERTIBLE_IMAGES,
        animations=False,
    )


def check(info: MediaInfo, policy: Policy, *, message_bytes: int = 0) -> Verdict:
    """Judge one file against a policy; the detail of every verdict on a file whose
    declared type disagrees with its bytes says so (see `_judge` for the order)."""
    verdict = _judge(info, policy, message_bytes)
    if not info.mismatch or verdict.reason == "type_mismatch":
        return verdict
    note = f"declared {info.declared_type}, bytes are {info.detected_type}"
    detail = f"{verdict.detail}; {note}" if verdict.detail else note
    return replace(verdict, detail=detail)


def _judge(info: MediaInfo, policy: Policy, message_bytes: int) -> Verdict:
    """Judge one file against a policy.

    `message_bytes` is what the message's other accepted files already take.
    Order: problem (empty, corrupt, bomb) -> type_mismatch -> unsupported_type
    -> too_large -> message_too_large. A declared type that differs from the
    bytes but names the same kind (a .heic holding JPEG bytes) is accepted;
    `info.mismatch` keeps the record of it.
    """
    if info.problem is not None:
        return Verdict(False, info.problem, info.detail or _PROBLEM_DETAIL.get(info.problem, ""))

    if _kind_mismatch(info):
        return Verdict(
            False,
            "type_mismatch",
            f"declared {info.declared_type} ({types.kind_of(info.declared_type)}) "
            f"but the bytes are {info.detected_type} ({info.kind})",
        )

    detected = info.detected_type
    if info.animated and not policy.animations:
        return Verdict(
            False,
            "unsupported_type",
            f"{policy.name} does not play animated {detected}: make it an MP4 video "
            "(ffmpeg -i in.gif -movflags faststart -pix_fmt yuv420p out.mp4) or send a "
            "still JPEG/PNG",
        )
    if detected not in policy.accepted_types:
        fixable = detected in policy.convertible_types
        fix = "; it can be converted to JPEG" if fixable else ""
        return Verdict(
            False,
            "unsupported_type",
            f"{detected} is not accepted by the {policy.name} policy{fix}",
            fixable,
        )

    shrinkable = detected in policy.shrinkable_types
    limit = policy.file_limit(detected)
    if info.size_bytes > limit:
        fix = "; it can be resized to fit" if shrinkable else ""
        return Verdict(
            False,
            "too_large",
            f"{_mb(info.size_bytes)} is over the {_mb(limit)} limit for {detected}{fix}",
            shrinkable,
        )

    total = message_bytes + info.size_bytes
    if total > policy.max_message_bytes:
        remaining = max(policy.max_message_bytes - message_bytes, 0)
        fixable = shrinkable and remaining > 0
        fix = f"; it can be resized into the {_mb(remaining)} left" if fixable else ""
        return Verdict(
            False,
            "message_too_large",
            f"the message would reach {_mb(total)}, over its {_mb(policy.max_message_bytes)} "
            f"limit{fix}",
            fixable,
        )

    return Verdict(True)


def check_count(count: int, policy: Policy) -> Verdict:
    """Whether a message may carry `count` files (Twilio error 21623 above 10)."""
    if count > policy.max_files:
        return Verdict(
            False,
            "message_too_large",
            f"{count} attachments; at most {policy.max_files} per message",
        )
    return Verdict(True)


_PROBLEM_DETAIL = {
    "empty": "the file is empty",
    "corrupt": "the file is damaged or truncated",
    "decompression_bomb": "the image would expand past the decoding limits",
}


def _kind_mismatch(info: MediaInfo) -> bool:
    """Whether the declared type names a different kind of media than the bytes are.

    Declarations that claim nothing checkable (missing, octet-stream, or an
    unknown application/* type) never count.
    """
    if not types.is_informative(info.declared_type):
        return False
    declared_kind = types.kind_of(info.declared_type)
    if declared_kind == "other" or declared_kind == info.kind:
        return False
    return not any({declared_kind, info.kind} <= pair for pair in _COMPATIBLE_KINDS)


def _mb(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1000:
        return f"{n / 1000:.0f} KB"
    return f"{n} bytes"
