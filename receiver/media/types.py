"""The one table of media types: canonical MIME type, kind, file extension, Pillow format.

Inspection, policy and transformation all read this table, so a type is added
or renamed in exactly one place (the way Pillow's plugin registry is a table).
"""

from __future__ import annotations

from dataclasses import dataclass

#: "presentation": a carrier's SMIL layout of the other parts, which the sender never chose.
KINDS = ("image", "video", "audio", "contact", "document", "other", "presentation")

#: Declared types that say nothing about the bytes; they never count as a mismatch.
UNINFORMATIVE = frozenset(
    {"application/octet-stream", "binary/octet-stream", "application/binary", "application/unknown"}
)


@dataclass(frozen=True)
class MediaType:
    """One canonical MIME type and what the service knows about it."""

    mime: str
    kind: str
    extension: str
    #: Pillow plugin allowed to open it (header-only probing); None: never handed to Pillow.
    pillow_format: str | None = None
    #: Other spellings senders and libmagic use for the same thing.
    aliases: tuple[str, ...] = ()
    #: The bytes carry no reliable signature (raw codec streams), so libmagic's
    #: "application/octet-stream" is consistent with the declared type.
    unsniffable: bool = False


def _t(
    mime: str,
    kind: str,
    extension: str,
    pillow_format: str | None = None,
    *aliases: str,
    unsniffable: bool = False,
) -> MediaType:
    return MediaType(mime, kind, extension, pillow_format, aliases, unsniffable)


TYPES: tuple[MediaType, ...] = (
    # Raster images Pillow may probe. HEIF goes through pillow-heif's opener.
    _t("image/jpeg", "image", "jpg", "JPEG", "image/jpg", "image/pjpeg", "image/jfif"),
    _t("image/png", "image", "png", "PNG", "image/x-png", "image/apng", "image/vnd.mozilla.apng"),
    _t("image/gif", "image", "gif", "GIF"),
    _t("image/heic", "image", "heic", "HEIF", "image/heic-sequence", "image/x-heic"),
    _t("image/heif", "image", "heif", "HEIF", "image/heif-sequence", "image/x-heif"),
    _t("image/webp", "image", "webp", "WEBP", "image/x-webp"),
    _t("image/bmp", "image", "bmp", "BMP", "image/x-ms-bmp", "image/x-bmp", "image/x-windows-bmp"),
    _t("image/tiff", "image", "tiff", "TIFF", "image/tif", "image/x-tiff"),
    _t("image/avif", "image", "avif", "AVIF"),
    _t("image/x-icon", "image", "ico", None, "image/vnd.microsoft.icon"),
    # Markup is a document, never an image: browsers run scripts inside SVG.
    _t("image/svg+xml", "document", "svg", None, "image/svg"),
    # Video. audio/* spellings of shared containers stay separate types.
    _t("video/mp4", "video", "mp4", None, "video/mpeg4", "application/mp4", "video/x-m4v"),
    _t("video/quicktime", "video", "mov", None, "video/mov"),
    _t("video/3gpp", "video", "3gp", None),
    _t("video/3gpp2", "video", "3g2", None),
    _t("video/3gpp-tt", "video", "3gp", None, unsniffable=True),
    _t("video/webm", "video", "webm", None),
    _t("video/mpeg", "video", "mpg", None, "video/mpeg2", "video/mp2t"),
    _t("video/x-msvideo", "video", "avi", None, "video/avi", "video/msvideo"),
    _t("video/x-matroska", "video", "mkv", None),
    _t("video/h261", "video", "h261", None, unsniffable=True),
    _t("video/h263", "video", "h263", None, "video/h263-1998", "video/h263-2000", unsniffable=True),
    _t("video/h264", "video", "h264", None, unsniffable=True),
    # Audio.
    _t("audio/mpeg", "audio", "mp3", None, "audio/mp3", "audio/mpeg3", "audio/x-mpeg", "audio/mpa"),
    _t("audio/mp4", "audio", "m4a", None, "audio/x-m4a", "audio/m4a"),
    _t("audio/aac", "audio", "aac", None, "audio/x-aac", "audio/x-hx-aac-adts", "audio/aacp"),
    _t("audio/ogg", "audio", "ogg", None, "application/ogg", "audio/opus", "audio/vorbis"),
    _t("audio/wav", "audio", "wav", None, "audio/x-wav", "audio/vnd.wave", "audio/wave"),
    _t("audio/amr", "audio", "amr", None, "audio/amr-nb", "audio/x-amr"),
    _t("audio/amr-wb", "audio", "awb", None),
    _t("audio/3gpp", "audio", "3gp", None),
    _t("audio/3gpp2", "audio", "3g2", None),
    _t("audio/webm", "audio", "weba", None),
    _t("audio/flac", "audio", "flac", None, "audio/x-flac"),
    _t("audio/basic", "audio", "au", None),
    _t("audio/ac3", "audio", "ac3", None),
    _t("audio/x-aiff", "audio", "aiff", None, "audio/aiff"),
    _t("audio/l24", "audio", "l24", None, unsniffable=True),
    _t("audio/vnd.rn-realaudio", "audio", "ra", None, "audio/x-pn-realaudio"),
    # Contact cards.
    _t("text/vcard", "contact", "vcf", None, "text/x-vcard", "text/directory", "application/vcard"),
    # MMS presentation layouts (OMA MMS: a SMIL part says where each part goes).
    _t("application/smil+xml", "presentation", "smil", None, "application/smil"),
    # Documents.
    _t("application/pdf", "document", "pdf", None, "application/x-pdf"),
    _t("text/plain", "document", "txt", None),
    _t("text/csv", "document", "csv", None, "application/csv", "text/comma-separated-values"),
    _t("text/rtf", "document", "rtf", None, "application/rtf", "text/richtext"),
    _t("text/calendar", "document", "ics", None, "text/x-vcalendar"),
    _t("application/msword", "document", "doc", None),
    _t("application/vnd.ms-excel", "document", "xls", None),
    _t("application/vnd.ms-powerpoint", "document", "ppt", None),
    _t(
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "document",
        "docx",
    ),
    _t("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "document", "xlsx"),
    _t(
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "document",
        "pptx",
    ),
    _t("application/vnd.oasis.opendocument.text", "document", "odt"),
    _t("application/vnd.oasis.opendocument.spreadsheet", "document", "ods"),
    _t("application/vnd.oasis.opendocument.presentation", "document", "odp"),
    _t("application/vnd.apple.pkpass", "document", "pkpass"),
    _t("text/html", "document", "html", None, "application/xhtml+xml"),
    _t("text/xml", "document", "xml", None, "application/xml"),
    # Everything else is "other": kept as bytes, never rendered.
    _t("application/json", "other", "json", None),
    _t("application/javascript", "other", "js", None, "text/javascript"),
    _t("application/zip", "other", "zip", None, "application/x-zip-compressed"),
    _t("application/gzip", "other", "gz", None, "application/x-gzip"),
    _t("application/x-7z-compressed", "other", "7z", None),
    _t("application/vnd.rar", "other", "rar", None, "application/x-rar"),
    _t("application/x-tar", "other", "tar", None),
    _t("application/x-ole-storage", "other", "bin", None, "application/cdfv2"),
    _t("application/x-dosexec", "other", "exe", None, "application/x-msdownload"),
    _t("application/x-executable", "other", "bin", None, "application/x-elf"),
    _t("application/x-sharedlib", "other", "so", None),
    _t("application/x-mach-binary", "other", "bin", None),
    _t("application/octet-stream", "other", "bin", None, "application/x-empty"),
)

_BY_MIME: dict[str, MediaType] = {}
for _entry in TYPES:
    _BY_MIME[_entry.mime] = _entry
    for _alias in _entry.aliases:
        _BY_MIME[_alias] = _entry
del _entry

# Kinds of the broad MIME families, for types the table does not list.
_FAMILY_KIND = {"image": "image", "video": "video", "audio": "audio", "text": "document"}

#: Raster formats Pillow probes, by canonical MIME type.
PILLOW_FORMATS: dict[str, str] = {t.mime: t.pillow_format for t in TYPES if t.pillow_format}

#: Types whose raster image the service can decode, thumbnail and convert.
RASTER_TYPES = frozenset(PILLOW_FORMATS)


def normalize(content_type: str | None) -> str | None:
    """Canonical lower-case MIME type without parameters; aliases mapped (image/jpg -> image/jpeg).

    Returns None for a missing or blank value. Unknown types come back lower-cased,
    parameters removed, so they can still be compared.
    """
    if content_type is None:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    if not base:
        return None
    entry = _BY_MIME.get(base)
    return entry.mime if entry else base


def lookup(content_type: str | None) -> MediaType | None:
    """The table entry for a MIME type or one of its aliases, or None."""
    norm = normalize(content_type)
    return _BY_MIME.get(norm) if norm else None


def kind_of(content_type: str | None) -> str:
    """The kind (one of KINDS) of a MIME type: the table first, then its family."""
    entry = lookup(content_type)
    if entry is not None:
        return entry.kind
    norm = normalize(content_type)
    if norm is None or "/" not in norm:
        return "other"
    family, _, subtype = norm.partition("/")
    # Markup with an XML suffix (application/rss+xml, image/foo+xml) is never an image.
    if subtype.endswith("+xml"):
        return "document"
    return _FAMILY_KIND.get(family, "other")


def extension_of(content_type: str | None) -> str:
    """Canonical file extension (no dot) for a MIME type; "bin" when unknown."""
    entry = lookup(content_type)
    return entry.extension if entry else "bin"


def is_informative(content_type: str | None) -> bool:
    """Whether a declared type claims anything about the bytes (octet-stream does not)."""
    norm = normalize(content_type)
    return norm is not None and norm not in UNINFORMATIVE and "/" in norm
