"""inspect(): a file's type comes from its bytes; bad input gives a verdict, never a crash."""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.media.inspect import KINDS, ContactCard, MediaInfo, inspect
from tests.support import samples

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

PROBLEMS = (None, "empty", "corrupt", "decompression_bomb")


def probe(data: bytes, declared: str | None = None, **kwargs: int) -> MediaInfo:
    fp = io.BytesIO(data)
    info = inspect(fp, declared, **kwargs)
    assert fp.tell() == 0, "inspect must leave the file at position 0"
    assert info.kind in KINDS
    assert info.problem in PROBLEMS
    return info


# --- good files ---------------------------------------------------------------------


def test_jpeg_facts_from_headers() -> None:
    data = samples.jpeg(640, 480, gps=True, orientation=1)
    info = probe(data, "image/jpeg")
    assert info.detected_type == "image/jpeg"
    assert info.kind == "image"
    assert info.extension == "jpg"
    assert info.size_bytes == len(data)
    assert (info.width, info.height) == (640, 480)
    assert info.frames == 1 and not info.animated
    assert info.orientation == 1
    assert info.image_format == "JPEG"
    assert not info.mismatch
    assert info.problem is None


@pytest.mark.parametrize("declared", ["image/jpg", "IMAGE/JPEG", "image/jpeg; charset=binary"])
def test_declared_aliases_are_not_a_mismatch(declared: str) -> None:
    info = probe(samples.jpeg(), declared)
    assert not info.mismatch
    assert info.declared_type == declared.strip()


@pytest.mark.parametrize("declared", [None, "", "application/octet-stream", "binary/octet-stream"])
def test_uninformative_declarations_are_not_a_mismatch(declared: str | None) -> None:
    info = probe(samples.jpeg(), declared)
    assert info.detected_type == "image/jpeg"
    assert not info.mismatch


def test_exif_orientation_is_reported() -> None:
    info = probe(samples.rotated_jpeg(orientation=6), "image/jpeg")
    assert info.orientation == 6
    # Stored sideways: the header size is the sensor's, orientation says how to show it.
    assert (info.width, info.height) == (60, 30)


def test_size_argument_is_used() -> None:
    data = samples.jpeg()
    assert probe(data, "image/jpeg", size=len(data)).size_bytes == len(data)


@pytest.mark.parametrize(
    ("make", "mime", "fmt", "ext"),
    [
        (samples.png, "image/png", "PNG", "png"),
        (samples.webp, "image/webp", "WEBP", "webp"),
        (samples.bmp, "image/bmp", "BMP", "bmp"),
        (samples.tiff, "image/tiff", "TIFF", "tiff"),
        (samples.heic, "image/heic", "HEIF", "heic"),
    ],
)
def test_other_raster_formats(make: Callable[..., bytes], mime: str, fmt: str, ext: str) -> None:
    info = probe(make(64, 48), mime)
    assert (info.detected_type, info.image_format, info.extension) == (mime, fmt, ext)
    assert (info.width, info.height, info.frames) == (64, 48, 1)
    assert info.kind == "image" and info.problem is None and not info.mismatch


def test_animated_gif_frames() -> None:
    info = probe(samples.gif_animated(frames=7), "image/gif")
    assert info.frames == 7
    assert info.animated
    assert info.problem is None


def test_progressive_jpeg_is_complete() -> None:
    assert probe(samples.jpeg(300, 200, progressive=True), "image/jpeg").problem is None


def test_jpeg_with_trailing_data_after_eoi_is_fine() -> None:
    # Phones append vendor trailers after the image's end marker.
    data = samples.jpeg(200, 100) + b"SEFT" + bytes(70_000)
    info = probe(data, "image/jpeg")
    assert info.problem is None


# --- bad input from the issue list ---------------------------------------------------


def test_zero_byte_file_is_empty() -> None:
    info = probe(b"", "image/jpeg")
    assert info.problem == "empty"
    assert info.size_bytes == 0
    assert info.detail


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_jpeg_is_corrupt(fraction: float) -> None:
    data = samples.truncated(samples.jpeg(400, 300), fraction)
    info = probe(data, "image/jpeg")
    assert info.problem == "corrupt"
    assert "truncated" in info.detail or "readable" in info.detail


def test_jpeg_missing_only_its_end_marker_is_corrupt() -> None:
    data = samples.jpeg(400, 300)
    assert data.endswith(b"\xff\xd9")
    assert probe(data[:-2], "image/jpeg").problem == "corrupt"


def test_truncated_progressive_jpeg_is_corrupt() -> None:
    data = samples.truncated(samples.jpeg(400, 300, progressive=True), 0.7)
    assert probe(data, "image/jpeg").problem == "corrupt"


def test_png_decompression_bomb() -> None:
    data = samples.png_bomb(12_000, 12_000)
    assert len(data) < 100_000  # small on the wire
    info = probe(data, "image/png")
    assert info.problem == "decompression_bomb"
    assert "144,000,000" in info.detail


def test_png_bomb_over_pillows_own_hard_limit() -> None:
    info = probe(samples.png_bomb(20_000, 20_000), "image/png")
    assert info.problem == "decompression_bomb"


def test_pixel_cap_is_configurable() -> None:
    data = samples.jpeg(200, 100)
    assert probe(data, "image/jpeg", max_pixels=19_999).problem == "decompression_bomb"
    assert probe(data, "image/jpeg", max_pixels=20_000).problem is None


def test_gif_with_thousands_of_frames_is_a_bomb() -> None:
    data = samples.gif_many_frames(5000)
    info = probe(data, "image/gif")
    assert info.problem == "decompression_bomb"
    assert "frames" in info.detail
    # With a higher cap the same file is counted exactly.
    relaxed = probe(data, "image/gif", max_frames=10_000)
    assert relaxed.problem is None
    assert relaxed.frames == 5000 and relaxed.animated


def test_truncated_gif_is_corrupt() -> None:
    data = samples.truncated(samples.gif_animated(20, 100, 100), 0.6)
    assert probe(data, "image/gif").problem == "corrupt"


def test_gif_without_trailer_byte_is_tolerated() -> None:
    data = samples.gif_animated(4)
    assert data.endswith(b";")
    assert probe(data[:-1], "image/gif").problem is None


@pytest.mark.parametrize(
    ("make", "mime"),
    [(samples.png, "image/png"), (samples.webp, "image/webp"), (samples.heic, "image/heic")],
)
def test_truncated_png_webp_heic_are_corrupt(make: Callable[..., bytes], mime: str) -> None:
    data = samples.truncated(make(300, 200), 0.6)
    assert probe(data, mime).problem == "corrupt"


@pytest.mark.parametrize(
    ("body", "detected"),
    [
        (samples.HTML_ERROR_PAGE, "text/html"),
        (samples.TWILIO_401_XML, "text/xml"),
        (samples.TWILIO_401_JSON, "application/json"),
    ],
)
def test_error_pages_declared_as_jpeg(body: bytes, detected: str) -> None:
    info = probe(body, "image/jpeg")
    assert info.detected_type == detected
    assert info.kind != "image"
    assert info.mismatch
    assert info.width is None


def test_svg_with_script_is_never_an_image() -> None:
    for declared in ("image/svg+xml", "image/png", None):
        info = probe(samples.SVG_WITH_SCRIPT, declared)
        assert info.detected_type == "image/svg+xml"
        assert info.kind == "document"
        assert info.extension == "svg"


def test_svg_without_xml_declaration() -> None:
    body = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    info = probe(body, "image/png")
    assert info.detected_type == "image/svg+xml" and info.kind == "document"


def test_heic_named_jpeg() -> None:
    info = probe(samples.heic(64, 48), "image/jpeg")
    assert info.detected_type == "image/heic"
    assert info.extension == "heic"
    assert info.kind == "image"
    assert info.mismatch
    assert (info.width, info.height) == (64, 48)


def test_jpeg_named_heic() -> None:
    # RocketChat#23638: an "IMG_1575.HEIC" that is really JPEG data.
    info = probe(samples.jpeg(), "image/heic")
    assert info.detected_type == "image/jpeg"
    assert info.extension == "jpg"
    assert info.mismatch
    assert info.problem is None


def test_heic_declared_heif_is_the_same_family() -> None:
    assert not probe(samples.heic(), "image/heif").mismatch


def test_executable_declared_as_image() -> None:
    info = probe(samples.WINDOWS_EXE, "image/jpeg")
    assert info.detected_type == "application/x-dosexec"
    assert info.kind == "other" and info.mismatch


# --- contacts and documents ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "declared", "name"),
    [
        (samples.VCARD_21, "text/x-vcard", "Jürgen Müller"),
        (samples.VCARD_30, "text/vcard", "Dr. Jane Appleseed"),
        (samples.VCARD_40, "text/vcard", "René François"),
        (
            samples.VCARD_XSS,
            "text/vcard",
            '<script>alert("x")</script><img src=x onerror=alert(1)>',
        ),
    ],
)
def test_vcards_are_contacts(data: bytes, declared: str, name: str) -> None:
    info = probe(data, declared)
    assert info.detected_type == "text/vcard"
    assert info.kind == "contact"
    assert info.extension == "vcf"
    assert not info.mismatch
    assert isinstance(info.contact, ContactCard)
    assert info.contact.name == name
    assert info.contact.phones


def test_vcard_with_bom_and_blank_lines() -> None:
    data = b"\xef\xbb\xbf\r\n\r\n" + samples.vcard("Sam Bom")
    info = probe(data, "text/plain")
    assert info.detected_type == "text/vcard"
    assert info.contact is not None and info.contact.name == "Sam Bom"


def test_utf16_vcard() -> None:
    data = b"\xff\xfe" + samples.vcard("Wide Name").decode().encode("utf-16-le")
    info = probe(data, "text/vcard")
    assert info.detected_type == "text/vcard"
    assert info.contact is not None and info.contact.name == "Wide Name"


@pytest.mark.parametrize(
    ("data", "declared", "detected", "kind", "ext"),
    [
        (samples.mp4_header(), "video/mp4", "video/mp4", "video", "mp4"),
        (samples.mp4_header(b"M4A "), "audio/mp4", "audio/mp4", "audio", "m4a"),
        (samples.mp4_header(b"qt  "), "video/quicktime", "video/quicktime", "video", "mov"),
        (samples.mp4_header(b"3gp4"), "video/3gpp", "video/3gpp", "video", "3gp"),
        (samples.pdf(), "application/pdf", "application/pdf", "document", "pdf"),
        (
            samples.docx(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "document",
            "docx",
        ),
        (
            samples.pkpass(),
            "application/vnd.apple.pkpass",
            "application/vnd.apple.pkpass",
            "document",
            "pkpass",
        ),
        (samples.plain_zip(), "application/zip", "application/zip", "other", "zip"),
        (b"a,b,c\n1,2,3\n" * 300, "text/csv", "text/csv", "document", "csv"),
        (b"just some words\n" * 200, "text/plain", "text/plain", "document", "txt"),
        (
            b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            "text/calendar",
            "text/calendar",
            "document",
            "ics",
        ),
    ],
)
def test_documents_and_media(
    data: bytes, declared: str, detected: str, kind: str, ext: str
) -> None:
    info = probe(data, declared)
    assert (info.detected_type, info.kind, info.extension) == (detected, kind, ext)
    assert not info.mismatch
    assert info.problem is None


def test_raw_codec_stream_keeps_its_declared_type() -> None:
    # Raw H.264 (Annex B: SPS, PPS, IDR slice) has no container signature;
    # libmagic cannot refute the declaration.
    stream = (
        b"\x00\x00\x00\x01\x67\x42\xc0\x1e\xd9\x00\xa0\x47\xfe\xc8"
        + b"\x00\x00\x00\x01\x68\xce\x3c\x80\x00\x00\x00\x01\x65"
        + random.Random(1).randbytes(4000)
    )
    info = probe(stream, "video/H264")
    assert info.detected_type == "video/h264"
    assert info.kind == "video"
    assert not info.mismatch


def test_unknown_bytes_declared_as_image() -> None:
    info = probe(random.Random(2).randbytes(4000), "image/jpeg")
    assert info.detected_type == "application/octet-stream"
    assert info.kind == "other" and info.mismatch


# --- robustness ---------------------------------------------------------------------


class BrokenFile(io.BytesIO):
    """A file whose reads fail half way, like a storage backend going away."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() > 0:
            raise OSError("backend went away")
        return super().read(16)


def test_inspect_never_raises_on_a_failing_file() -> None:
    info = inspect(BrokenFile(samples.jpeg(300, 200)), "image/jpeg")
    assert info.problem == "corrupt"
    assert info.detail


VALID = [
    samples.jpeg(48, 32),
    samples.jpeg(48, 32, progressive=True, orientation=6, gps=True),
    samples.png(24, 16, alpha=True),
    samples.gif_animated(3, 16, 16),
    samples.webp(24, 16),
    samples.bmp(8, 8),
    samples.tiff(8, 8),
    samples.heic(32, 24),
    samples.VCARD_21,
    samples.VCARD_40,
    samples.mp4_header(size=256),
    samples.pdf(),
    samples.docx(),
    samples.SVG_WITH_SCRIPT,
]


def _check_total(data: bytes, declared: str | None) -> None:
    info = probe(data, declared)
    assert info.size_bytes == len(data)
    if not data:
        assert info.problem == "empty"


# Pillow warns about the damaged EXIF and TIFF tags it skips; that is expected here.
@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4096), declared=st.sampled_from([None, "image/jpeg", "text/vcard"]))
def test_fuzz_random_bytes_never_raise(data: bytes, declared: str | None) -> None:
    _check_total(data, declared)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid sample with random byte flips, a cut, an insertion or a splice."""
    data = bytearray(draw(st.sampled_from(VALID)))
    rng = random.Random(draw(st.integers(0, 2**32)))
    for _ in range(draw(st.integers(1, 6))):
        op = rng.choice(("flip", "cut", "insert", "zero", "splice"))
        if not data:
            break
        pos = rng.randrange(len(data))
        if op == "flip":
            data[pos] = rng.randrange(256)
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = rng.randbytes(rng.randrange(1, 64))
        elif op == "zero":
            data[pos : pos + 16] = bytes(len(data[pos : pos + 16]))
        else:
            other = rng.choice(VALID)
            data[pos:] = other[rng.randrange(len(other)) :]
    return bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(), declared=st.sampled_from([None, "image/jpeg", "image/heic", "text/vcard"]))
def test_fuzz_mutated_files_never_raise(data: bytes, declared: str | None) -> None:
    _check_total(data, declared)
