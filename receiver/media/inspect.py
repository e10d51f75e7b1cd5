"""What a file really is, from its bytes: type, kind, image facts, contact card.

`inspect()` reads a seekable file and returns a `MediaInfo`. It trusts the
bytes, not the sender: python-magic on the first bytes, refined where libmagic
is vague (HEIF brands, vCards, zip-based documents), then header-only probing
with Pillow restricted to the one format the bytes claim to be. Images are
never fully decoded here; size limits (pixels, frames) are checked from the
headers, and truncation is found with cheap structural checks (end markers),
so inspecting a 12-megapixel JPEG takes a few milliseconds.

It never raises on bad input: anything unexpected becomes ``problem="corrupt"``.
No network, no web framework.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import zipfile
from dataclasses import dataclass, replace
from typing import BinaryIO

import magic
from PIL import Image

from receiver.media import types
from receiver.media.heif import open_image
from receiver.media.probe import AVFacts
from receiver.media.types import KINDS, extension_of, is_informative, kind_of, normalize
from receiver.media.vcard import ContactCard, decode_text, looks_like_vcard, parse_vcards

__all__ = ["KINDS", "ContactCard", "MediaInfo", "inspect", "with_av_facts"]

# Load every Pillow plugin now rather than inside the first webhook of each worker.
Image.init()

#: Bytes given to libmagic (it needs at least 2 KB to tell markup and text formats apart).
HEAD_BYTES = 8192
#: A vCard is parsed from at most this much (embedded photos can make them large).
MAX_VCARD_BYTES = 1 << 20
#: Contacts listed from one file (an exported address book can hold thousands).
MAX_VCARDS = 100
#: The first line of an AMR-WB file (RFC 4867 section 5); libmagic calls it plain AMR.
_AMR_WB_MAGIC = b"#!AMR-WB\n"
#: Window used when scanning a file for an end marker.
_CHUNK = 1 << 20

_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"mif2", b"heif"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_FAMILY = frozenset({"image/heic", "image/heif"})
_OLE_DOCUMENTS = frozenset(
    {"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint"}
)
_OOXML = "application/vnd.openxmlformats-officedocument."
_OOXML_PARTS = (
    ("word/", _OOXML + "wordprocessingml.document"),
    ("xl/", _OOXML + "spreadsheetml.sheet"),
    ("ppt/", _OOXML + "presentationml.presentation"),
)
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class MediaInfo:
    """Facts about one file, read from its bytes; `problem` is set when it cannot be used."""

    #: What the bytes are (libmagic, refined), canonical MIME type.
    detected_type: str
    #: What the sender said, as given (None when nothing was declared).
    declared_type: str | None
    kind: str
    #: Canonical extension for `detected_type`, without the dot.
    extension: str
    size_bytes: int
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    animated: bool = False
    #: EXIF orientation tag (1-8) when the image has one.
    orientation: int | None = None
    #: Pillow's format name (JPEG, PNG, GIF, HEIF, WEBP, BMP, TIFF, AVIF).
    image_format: str | None = None
    #: The first card of a contact file (kept for readers of one card)...
    contact: ContactCard | None = None
    #: ...and every card in it, in order (a .vcf may hold a whole address book).
    contacts: tuple[ContactCard, ...] = ()
    #: The declared type disagrees with the bytes (after normalising aliases).
    mismatch: bool = False
    #: None, or a verdict reason: "empty", "corrupt", "decompression_bomb".
    problem: str | None = None
    detail: str = ""
    #: Audio and video facts from ffprobe (`with_av_facts`), when it ran.
    container: str | None = None
    codecs: tuple[str, ...] = ()
    duration_seconds: float | None = None
    rotation: int | None = None


class _Problem(Exception):
    """A verdict found while probing; carries the reason and a human explanation."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _ImageFacts:
    width: int
    height: int
    frames: int
    orientation: int | None
    image_format: str


def inspect(
    fp: BinaryIO,
    declared_type: str | None,
    *,
    size: int | None = None,
    max_pixels: int = 50_000_000,
    max_frames: int = 1000,
) -> MediaInfo:
    """Identify a file from its bytes; never raises on bad input.

    `fp` must be seekable; it is read from the start and left at position 0.
    `size` saves a seek when the caller already counted the bytes. An image over
    `max_pixels` pixels or `max_frames` frames is a ``decompression_bomb``
    (Pillow's own global cap, ``Image.MAX_IMAGE_PIXELS``, also applies).
    """
    declared = declared_type.strip() if declared_type and declared_type.strip() else None
    try:
        return _inspect(fp, declared, size, max_pixels, max_frames)
    except Exception as exc:  # the contract: bad bytes give a verdict, never a crash
        return MediaInfo(
            detected_type="application/octet-stream",
            declared_type=declared,
            kind="other",
            extension="bin",
            size_bytes=_safe_size(fp, size),
            problem="corrupt",
            detail=f"the file could not be read ({type(exc).__name__})",
        )
    finally:
        # A broken file object has no position to restore.
        with contextlib.suppress(Exception):
            fp.seek(0)


def _inspect(
    fp: BinaryIO, declared: str | None, size: int | None, max_pixels: int, max_frames: int
) -> MediaInfo:
    if size is None:
        size = _size_of(fp)
    fp.seek(0)
    head = fp.read(HEAD_BYTES)
    if size == 0 or not head:
        return MediaInfo(
            detected_type="application/octet-stream",
            declared_type=declared,
            kind="other",
            extension="bin",
            size_bytes=0,
            problem="empty",
            detail="the file is empty (0 bytes)",
        )

    declared_norm = normalize(declared)
    detected = _detect(head, fp, declared_norm)
    info = MediaInfo(
        detected_type=detected,
        declared_type=declared,
        kind=kind_of(detected),
        extension=extension_of(detected),
        size_bytes=size,
        mismatch=_is_mismatch(declared_norm, detected),
    )

    fmt = types.PILLOW_FORMATS.get(detected)
    if fmt is not None:
        try:
            facts = _probe_image(fp, fmt, size, max_pixels, max_frames)
        except _Problem as problem:
            return replace(info, problem=problem.reason, detail=problem.detail)
        except Exception as exc:  # a decoder tripping over damaged headers
            return replace(info, problem="corrupt", detail=f"damaged {fmt} image ({_short(exc)})")
        return replace(
            info,
            width=facts.width,
            height=facts.height,
            frames=facts.frames,
            animated=facts.frames > 1,
            orientation=facts.orientation,
            image_format=facts.image_format,
        )
    if detected == "text/vcard":
        fp.seek(0)
        try:
            cards = tuple(parse_vcards(fp.read(MAX_VCARD_BYTES), max_cards=MAX_VCARDS))
        except Exception:  # the cards are a convenience; the bytes are still a vCard
            cards = ()
        return replace(info, contact=cards[0] if cards else None, contacts=cards)
    return info


#: Containers libmagic names after their video brand whose tracks may be audio only.
_AUDIO_ONLY_TYPES = {
    "video/3gpp": "audio/3gpp",
    "video/3gpp2": "audio/3gpp2",
    "video/mp4": "audio/mp4",
    "video/quicktime": "audio/mp4",
}


def with_av_facts(info: MediaInfo, facts: AVFacts | None) -> MediaInfo:
    """`info` with ffprobe's facts; a 3GPP/MP4 with only audio tracks becomes the audio
    type (libmagic reads the brand, which is the same for both)."""
    if facts is None or info.problem is not None:
        return info
    detected = info.detected_type
    if not facts.has_video and detected in _AUDIO_ONLY_TYPES:
        detected = _AUDIO_ONLY_TYPES[detected]
    return replace(
        info,
        detected_type=detected,
        kind=kind_of(detected),
        extension=extension_of(detected),
        mismatch=_is_mismatch(normalize(info.declared_type), detected),
        container=facts.container,
        codecs=facts.codecs,
        duration_seconds=facts.duration_seconds,
        rotation=facts.rotation,
        width=facts.width or info.width,
        height=facts.height or info.height,
    )


def _size_of(fp: BinaryIO) -> int:
    fp.seek(0, io.SEEK_END)
    return fp.tell()


def _safe_size(fp: BinaryIO, size: int | None) -> int:
    if size is not None:
        return size
    try:
        return _size_of(fp)
    except Exception:
        return 0


# --- type detection ---------------------------------------------------------------


def _detect(head: bytes, fp: BinaryIO, declared: str | None) -> str:
    """libmagic's answer on the head of the file, refined where it is vague."""
    detected = normalize(magic.from_buffer(head, mime=True)) or "application/octet-stream"
    if head.startswith(_AMR_WB_MAGIC):
        return "audio/amr-wb"

    brand_type = _iso_image_brand(head)
    if brand_type is not None:
        return brand_type

    if detected.startswith("text/") or detected == "application/octet-stream":
        text = decode_text(head[:4096]) if _maybe_text(head) else ""
        if looks_like_vcard(text):
            return "text/vcard"
        if _looks_like_smil(text):
            return "application/smil+xml"
        stripped = text.lstrip("\ufeff \t\r\n").upper()
        if stripped.startswith("BEGIN:VCALENDAR"):
            return "text/calendar"
        lowered = text.lower()
        if detected in ("text/xml", "text/plain") and "<svg" in lowered and "<html" not in lowered:
            return "image/svg+xml"
        if detected == "text/plain" and declared == "text/csv":
            # CSV is plain text; libmagic's CSV guess is unreliable, the bytes cannot refute it.
            return "text/csv"

    if detected == "application/zip":
        return _zip_document_type(fp) or detected
    if detected == "application/x-ole-storage" and declared in _OLE_DOCUMENTS:
        # Old Office files share one container; libmagic cannot always tell which.
        return declared
    if detected == "application/octet-stream" and declared is not None:
        entry = types.lookup(declared)
        if entry is not None and entry.unsniffable:
            return entry.mime
    return detected


def _looks_like_smil(text: str) -> bool:
    """A SMIL presentation: the root element (after an XML declaration, doctype or
    comments) is <smil>. libmagic calls it text/html or text/xml."""
    return re.match(r"\s*(<[?!][^>]*>\s*)*<smil[\s>]", text.lstrip("\ufeff"), re.I) is not None


def _maybe_text(head: bytes) -> bool:
    """Cheap guard before decoding: UTF-16 BOMs or no NUL bytes in the first KB."""
    return head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" not in head[:1024]


def _iso_image_brand(head: bytes) -> str | None:
    """HEIC/HEIF/AVIF from the ISO-BMFF ftyp box brands (libmagic mixes them up)."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    box_size = struct.unpack(">I", head[:4])[0]
    end = min(max(box_size, 16), len(head), 4096)
    major = head[8:12]
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    brands = {major} | compatible
    if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and brands & _AVIF_BRANDS):
        return "image/avif"
    if major in _HEIC_BRANDS or (major in _HEIF_BRANDS and brands & _HEIC_BRANDS):
        return "image/heic"
    if major in _HEIF_BRANDS:
        return "image/heif"
    return None


def _zip_document_type(fp: BinaryIO) -> str | None:
    """OOXML, OpenDocument and Wallet passes are zip files; tell them apart by entry names."""
    fp.seek(0)
    try:
        with zipfile.ZipFile(fp) as archive:
            names = archive.namelist()
            if "[Content_Types].xml" in names:
                for prefix, mime in _OOXML_PARTS:
                    if any(n.startswith(prefix) for n in names):
                        return mime
            if "mimetype" in names and archive.getinfo("mimetype").file_size < 100:
                declared = archive.read("mimetype").decode("ascii", errors="replace").strip()
                entry = types.lookup(declared)
                if entry is not None and entry.mime.startswith("application/vnd.oasis"):
                    return entry.mime
            if "pass.json" in names:
                return "application/vnd.apple.pkpass"
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError):
        return None
    return None


def _is_mismatch(declared: str | None, detected: str) -> bool:
    """Whether a declared type claims something other than what the bytes are."""
    if not is_informative(declared) or declared == detected:
        return False
    # Senders label HEIF stills "heic" or "heif" interchangeably.
    return not (declared in _HEIF_FAMILY and detected in _HEIF_FAMILY)


# --- image probing ----------------------------------------------------------------


def _probe_image(
    fp: BinaryIO, fmt: str, size: int, max_pixels: int, max_frames: int
) -> _ImageFacts:
    """Header-only facts about an image; raises _Problem for bombs and damaged files."""
    try:
        im = open_image(fp, [fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception when warnings are turned into errors;
        # warnings.catch_warnings() is not used because it is not thread-safe.
        raise _Problem("decompression_bomb", str(exc)) from None
    except Exception as exc:
        raise _Problem("corrupt", f"not a readable {fmt} image ({_short(exc)})") from None

    with im:
        width, height = im.size
        image_format = im.format or fmt
        if width <= 0 or height <= 0:
            raise _Problem("corrupt", f"{fmt} header gives an empty size {width}x{height}")
        if width * height > max_pixels:
            raise _Problem(
                "decompression_bomb",
                f"{width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}",
            )
        orientation = _orientation(im)
        frames, complete = _count_frames(im, fmt, fp, size, max_frames)
    if frames > max_frames:
        raise _Problem(
            "decompression_bomb", f"more than {max_frames:,} frames (limit {max_frames:,})"
        )
    if not complete:
        raise _Problem("corrupt", "truncated GIF: the data ends inside a frame")
    _check_complete(fp, fmt, size)
    return _ImageFacts(width, height, frames, orientation, image_format)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(0x0112)
    except Exception:
        # A damaged EXIF block does not make the picture unusable.
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _count_frames(
    im: Image.Image, fmt: str, fp: BinaryIO, size: int, max_frames: int
) -> tuple[int, bool]:
    """(frame count, complete), reading no further than max_frames + 1 frames.

    `complete` is only ever False for GIF, whose walk also finds truncation.
    """
    if fmt in ("JPEG", "BMP"):
        # Multi-picture JPEGs (MPO) hold previews and depth maps, not animation.
        return 1, True
    if fmt == "GIF":
        frames, complete = _walk_gif(fp, size, max_frames + 1)
        return frames, complete and frames > 0
    if fmt == "TIFF":
        # Pillow's n_frames walks every IFD; stop one past the cap instead.
        count = 1
        try:
            while count <= max_frames:
                im.seek(count)
                count += 1
        except EOFError:
            pass
        return count, True
    # PNG (acTL), WebP (demux), HEIF and AVIF containers know their count up front.
    return int(getattr(im, "n_frames", 1) or 1), True


class _Window:
    """Random byte access to a file through a 1 MiB window (keeps memory flat)."""

    def __init__(self, fp: BinaryIO, size: int) -> None:
        self.fp = fp
        self.size = size
        self.start = 0
        self.data = b""

    def byte(self, pos: int) -> int:
        if not self.start <= pos < self.start + len(self.data):
            self.fp.seek(pos)
            self.data = self.fp.read(_CHUNK)
            self.start = pos
            if not self.data:
                raise EOFError(pos)
        return self.data[pos - self.start]


def _walk_gif(fp: BinaryIO, size: int, stop_after: int) -> tuple[int, bool]:
    """Count GIF image descriptors without decoding (stops at `stop_after`).

    Returns (frames, complete): complete is False when the data ends inside a frame.
    A missing trailer byte alone is tolerated, as browsers do.
    """
    win = _Window(fp, size)
    flags = win.byte(10)
    pos = 13
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    frames = 0
    try:
        while pos < size:
            block = win.byte(pos)
            if block == 0x3B:  # trailer
                return frames, True
            if block == 0x21:  # extension: label, then data sub-blocks
                pos = _skip_sub_blocks(win, pos + 2)
            elif block == 0x2C:  # image descriptor
                packed = win.byte(pos + 9)
                pos += 10
                if packed & 0x80:
                    pos += 3 << ((packed & 7) + 1)
                pos = _skip_sub_blocks(win, pos + 1)  # +1: LZW minimum code size
                if pos > size:
                    return frames, False
                frames += 1
                if frames >= stop_after:
                    return frames, True
            else:
                # Stray bytes after the last frame: decoders stop here too.
                return frames, frames > 0
    except EOFError:
        return frames, False
    return frames, frames > 0


def _skip_sub_blocks(win: _Window, pos: int) -> int:
    while True:
        length = win.byte(pos)
        pos += 1 + length
        if length == 0:
            return pos


def _check_complete(fp: BinaryIO, fmt: str, size: int) -> None:
    """Cheap truncation checks per format; raises _Problem("corrupt")."""
    if fmt == "JPEG":
        _check_jpeg_complete(fp, size)
    elif fmt == "PNG":
        _check_png_complete(fp, size)
    elif fmt == "WEBP":
        fp.seek(4)
        (riff_size,) = struct.unpack("<I", fp.read(4))
        if riff_size + 8 > size:
            raise _Problem(
                "corrupt", f"truncated WebP: header says {riff_size + 8} bytes, file has {size}"
            )
    elif fmt in ("HEIF", "AVIF"):
        _check_isobmff_complete(fp, size)


def _check_isobmff_complete(fp: BinaryIO, size: int) -> None:
    """Every top-level box of a HEIF/AVIF file must fit inside the file.

    libheif reads the metadata eagerly but the image data (mdat) only on decode,
    so a cut-off download would otherwise pass as a good image.
    """
    pos = 0
    while pos + 8 <= size:
        fp.seek(pos)
        header = fp.read(16)
        (box_size,) = struct.unpack(">I", header[:4])
        if box_size == 1 and len(header) >= 16:
            (box_size,) = struct.unpack(">Q", header[8:16])
        elif box_size == 0:  # the box runs to the end of the file
            return
        if box_size < 8:
            raise _Problem("corrupt", f"damaged HEIF container: box of {box_size} bytes at {pos}")
        pos += box_size
    if pos > size:
        raise _Problem("corrupt", f"truncated HEIF: boxes need {pos} bytes, file has {size}")


def _jpeg_scan_start(fp: BinaryIO, size: int) -> int | None:
    """Offset of the first start-of-scan marker, walking the segments before it."""
    fp.seek(0)
    header = fp.read(min(size, 1 << 18))
    pos = 2
    while pos + 4 <= len(header):
        if header[pos] != 0xFF:
            return None
        marker = header[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return pos
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", header[pos + 2 : pos + 4])
        pos += 2 + length
    if pos < size and len(header) < size:
        # Huge APPn segments (embedded previews) push the scan past the first read.
        return _jpeg_scan_start_slow(fp, size, pos)
    return None


def _jpeg_scan_start_slow(fp: BinaryIO, size: int, pos: int) -> int | None:
    while pos + 4 <= size:
        fp.seek(pos)
        seg = fp.read(4)
        if len(seg) < 4 or seg[0] != 0xFF:
            return None
        if seg[1] == 0xFF:
            pos += 1
            continue
        if seg[1] == 0xDA:
            return pos
        if seg[1] in (0x01, 0xD8) or 0xD0 <= seg[1] <= 0xD7:
            pos += 2
            continue
        pos += 2 + struct.unpack(">H", seg[2:4])[0]
    return None


def _check_jpeg_complete(fp: BinaryIO, size: int) -> None:
    """A JPEG is complete when an EOI marker follows its first scan.

    Entropy-coded data never contains FF D9 (0xFF bytes are stuffed), so the
    first FF D9 after SOS ends the primary image. It is usually in the last few
    bytes; trailers (MPF previews, vendor data) push it further, so the tail is
    checked first and the whole scan area only when needed.
    """
    sos = _jpeg_scan_start(fp, size)
    if sos is None:
        raise _Problem("corrupt", "JPEG without image data (no start-of-scan marker)")
    tail_start = max(sos, size - 65536)
    fp.seek(tail_start)
    if b"\xff\xd9" in fp.read(size - tail_start):
        return
    pos = sos
    carry = b""
    while pos < tail_start:
        fp.seek(pos)
        chunk = fp.read(min(_CHUNK, tail_start - pos + 1))
        if not chunk:
            break
        if b"\xff\xd9" in carry + chunk:
            return
        carry = chunk[-1:]
        pos += len(chunk)
    raise _Problem("corrupt", "truncated JPEG: no end-of-image marker after the image data")


def _check_png_complete(fp: BinaryIO, size: int) -> None:
    """A PNG ends with its IEND chunk; otherwise walk and CRC-check every chunk."""
    if size >= len(_PNG_IEND):
        fp.seek(size - len(_PNG_IEND))
        if fp.read(len(_PNG_IEND)) == _PNG_IEND:
            return
    fp.seek(0)
    try:
        # verify() leaves the image unusable, hence a separate open (facts were read before).
        with Image.open(fp, formats=["PNG"]) as im:
            im.verify()
    except Exception as exc:
        raise _Problem("corrupt", f"truncated or damaged PNG ({_short(exc)})") from None
