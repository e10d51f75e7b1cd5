"""Thumbnails, metadata stripping and fit-to-budget: results decode, stay upright, carry no EXIF."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import pytest
from PIL import Image, ImageSequence

from receiver.errors import MediaError
from receiver.media.inspect import MediaInfo, inspect
from receiver.media.transform import (
    Derived,
    estimate_jpeg_quality,
    fit,
    fit_for_mms,
    make_thumbnail,
    strip_gif_blocks,
    strip_jpeg_segments,
    strip_metadata,
    strip_png_chunks,
)
from tests.support import samples

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def info_of(data: bytes, declared: str | None = None) -> MediaInfo:
    return inspect(io.BytesIO(data), declared)


def jpeg_markers(data: bytes) -> list[int]:
    """Markers of the segments before the first scan."""
    markers = []
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            break
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return markers


def png_chunks(data: bytes) -> list[bytes]:
    kinds = []
    pos = 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def pixel(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = im.convert("RGB").getpixel(xy)
    assert isinstance(value, tuple)
    return value


def frame_count(im: Image.Image) -> int:
    return int(getattr(im, "n_frames", 1))


def assert_no_metadata(derived: Derived) -> Image.Image:
    """The output decodes, matches its declared type and carries no EXIF/GPS/XMP/text."""
    data = derived.data
    im = Image.open(io.BytesIO(data))
    im.load()
    assert (im.width, im.height) == (derived.width, derived.height)
    assert f"image/{(im.format or '').lower()}" == derived.content_type
    assert not im.getexif(), "EXIF must be gone"
    assert b"Exif\x00\x00" not in data
    assert b"ns.adobe.com/xap" not in data
    if im.format == "JPEG":
        assert 0xE1 not in jpeg_markers(data)  # APP1: EXIF or XMP
        assert 0xED not in jpeg_markers(data)  # APP13: IPTC
    if im.format == "PNG":
        assert not {b"eXIf", b"tEXt", b"iTXt", b"zTXt"} & set(png_chunks(data))
    return im


# --- thumbnails ---------------------------------------------------------------------


def test_jpeg_thumbnail_small_upright_and_clean() -> None:
    thumb = make_thumbnail(io.BytesIO(samples.jpeg(1200, 900, gps=True, orientation=1)))
    assert (thumb.content_type, thumb.extension) == ("image/jpeg", "jpg")
    assert (thumb.width, thumb.height) == (320, 240)
    assert_no_metadata(thumb)


def test_twelve_megapixel_thumbnail() -> None:
    thumb = make_thumbnail(io.BytesIO(samples.camera_jpeg_12mp()))
    assert (thumb.width, thumb.height) == (320, 240)
    assert_no_metadata(thumb)


def test_exif_rotated_thumbnail_is_upright_without_gps() -> None:
    source = samples.rotated_jpeg(orientation=6, gps=True)
    assert Image.open(io.BytesIO(source)).getexif().get_ifd(samples.GPS_IFD)
    thumb = make_thumbnail(io.BytesIO(source))
    im = assert_no_metadata(thumb)
    # 60x30 stored sideways with orientation 6 shows as 30x60: red (left) on top.
    assert (thumb.width, thumb.height) == (30, 60)
    top = pixel(im, (15, 5))
    bottom = pixel(im, (15, 55))
    assert top[0] > 150 and top[2] < 100, top
    assert bottom[2] > 150 and bottom[0] < 100, bottom


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_every_orientation_matches_pillow(orientation: int) -> None:
    from PIL import ImageOps

    source = samples.rotated_jpeg(orientation=orientation, gps=False)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(source)))
    thumb = make_thumbnail(io.BytesIO(source))
    assert (thumb.width, thumb.height) == expected.size


def test_png_thumbnail_without_transparency_is_jpeg() -> None:
    thumb = make_thumbnail(io.BytesIO(samples.png(640, 480, text=True)))
    assert thumb.content_type == "image/jpeg"
    assert (thumb.width, thumb.height) == (320, 240)
    assert_no_metadata(thumb)


def test_png_thumbnail_with_transparency_stays_png() -> None:
    thumb = make_thumbnail(io.BytesIO(samples.png(640, 480, alpha=True)))
    assert thumb.content_type == "image/png"
    im = assert_no_metadata(thumb)
    assert im.mode == "RGBA"
    lowest = im.getchannel("A").getextrema()[0]
    assert isinstance(lowest, int) and lowest < 255


def test_animated_gif_thumbnail_is_its_first_frame() -> None:
    thumb = make_thumbnail(io.BytesIO(samples.gif_animated(frames=8, width=96, height=64)))
    assert thumb.content_type == "image/jpeg"
    assert (thumb.width, thumb.height) == (96, 64)
    assert_no_metadata(thumb)


def test_heic_thumbnail_is_converted() -> None:
    thumb = make_thumbnail(io.BytesIO(samples.heic(640, 480, gps=True)), max_side=200)
    assert thumb.content_type == "image/jpeg"
    assert (thumb.width, thumb.height) == (200, 150)
    assert_no_metadata(thumb)


def test_heic_thumbnail_uses_the_embedded_preview() -> None:
    data = samples.heic(480, 360, thumbnail=320)
    assert Image.open(io.BytesIO(data)).info.get("thumbnails") == [320]
    thumb = make_thumbnail(io.BytesIO(data))
    assert (thumb.content_type, thumb.width, thumb.height) == ("image/jpeg", 320, 240)
    assert_no_metadata(thumb)


@pytest.mark.parametrize("make", [samples.webp, samples.bmp, samples.tiff])
def test_other_format_thumbnails(make: Callable[..., bytes]) -> None:
    thumb = make_thumbnail(io.BytesIO(make(400, 300)), max_side=100)
    assert (thumb.content_type, thumb.width, thumb.height) == ("image/jpeg", 100, 75)
    assert_no_metadata(thumb)


def test_thumbnail_refuses_bombs_and_damaged_files() -> None:
    with pytest.raises(MediaError) as bomb:
        make_thumbnail(io.BytesIO(samples.png_bomb()))
    assert bomb.value.reason == "decompression_bomb"
    with pytest.raises(MediaError) as small_cap:
        make_thumbnail(io.BytesIO(samples.jpeg(200, 100)), max_pixels=1000)
    assert small_cap.value.reason == "decompression_bomb"
    with pytest.raises(MediaError) as damaged:
        make_thumbnail(io.BytesIO(samples.truncated(samples.png(300, 200))))
    assert damaged.value.reason == "corrupt"
    with pytest.raises(MediaError) as html:
        make_thumbnail(io.BytesIO(samples.HTML_ERROR_PAGE))
    assert html.value.reason == "corrupt"
    with pytest.raises(MediaError):
        make_thumbnail(io.BytesIO(samples.SVG_WITH_SCRIPT))


# --- stripping ----------------------------------------------------------------------


def test_strip_upright_jpeg_is_lossless() -> None:
    source = samples.jpeg(320, 240, gps=True, orientation=1)
    stripped = strip_metadata(io.BytesIO(source), info_of(source))
    assert_no_metadata(stripped)
    # The entropy-coded image data is byte-identical: no generation loss.
    scan = source.index(b"\xff\xda")
    assert stripped.data.endswith(source[scan:])
    assert len(stripped.data) < len(source)


def test_strip_rotated_jpeg_applies_orientation() -> None:
    source = samples.rotated_jpeg(orientation=6, gps=True)
    stripped = strip_metadata(io.BytesIO(source), info_of(source))
    assert (stripped.width, stripped.height) == (30, 60)
    im = assert_no_metadata(stripped)
    assert pixel(im, (15, 5))[0] > 150


def test_strip_png_text_and_exif() -> None:
    source = samples.png(64, 48, text=True)
    assert {b"tEXt", b"eXIf"} <= set(png_chunks(source))
    stripped = strip_metadata(io.BytesIO(source), info_of(source))
    assert stripped.content_type == "image/png"
    assert_no_metadata(stripped)


def test_strip_heic_with_gps_becomes_jpeg() -> None:
    source = samples.heic(64, 48, gps=True)
    stripped = strip_metadata(io.BytesIO(source), info_of(source))
    assert (stripped.content_type, stripped.width, stripped.height) == ("image/jpeg", 64, 48)
    assert_no_metadata(stripped)


def test_strip_gif_keeps_frames_drops_comments() -> None:
    source = samples.gif_animated(frames=5)
    # Insert a comment extension after the header and global colour table.
    flags = source[10]
    head = 13 + (3 << ((flags & 7) + 1))
    commented = source[:head] + b"\x21\xfe\x05where\x00" + source[head:]
    stripped = strip_metadata(io.BytesIO(commented), info_of(commented))
    assert b"where" not in stripped.data
    im = Image.open(io.BytesIO(stripped.data))
    assert frame_count(im) == 5
    assert im.info.get("loop") == 0


def test_strip_refuses_non_images() -> None:
    with pytest.raises(MediaError) as exc:
        strip_metadata(io.BytesIO(samples.pdf()), info_of(samples.pdf()))
    assert exc.value.reason == "unsupported_type"


def test_segment_and_chunk_strippers_reject_garbage() -> None:
    with pytest.raises(ValueError):
        strip_jpeg_segments(b"not a jpeg")
    with pytest.raises(ValueError):
        strip_jpeg_segments(samples.truncated(samples.jpeg(200, 100)))
    with pytest.raises(ValueError):
        strip_png_chunks(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\xffIDAT")
    with pytest.raises(ValueError):
        strip_gif_blocks(b"GIF89a" + bytes(7) + b"\x99")


def test_jpeg_quality_is_read_from_its_tables() -> None:
    for quality in (50, 75, 85, 95):
        im = Image.open(io.BytesIO(samples.jpeg(64, 64, quality=quality)))
        estimate = estimate_jpeg_quality(im)
        assert estimate is not None and abs(estimate - quality) <= 2


# --- fitting to a budget ------------------------------------------------------------


@pytest.fixture(scope="module")
def camera() -> bytes:
    data = samples.camera_jpeg_12mp()
    assert 6_000_000 < len(data) < 10_000_000
    return data


@pytest.mark.parametrize("budget", [5_000_000, 600_000])
def test_fit_twelve_megapixels(camera: bytes, budget: int) -> None:
    info = info_of(camera, "image/jpeg")
    result = fit(io.BytesIO(camera), info, budget_bytes=budget)
    derived = result.derived
    assert len(derived.data) <= budget
    assert derived.content_type == "image/jpeg"
    assert_no_metadata(derived)
    # The size was predicted and calibrated on a sample, so one full encode sufficed.
    assert result.encode_passes == 1
    assert result.predicted_bytes is not None
    assert fit_for_mms(io.BytesIO(camera), info, budget_bytes=budget).data == derived.data


@pytest.mark.parametrize(
    ("make", "mime"),
    [
        (samples.heic, "image/heic"),
        (samples.webp, "image/webp"),
        (samples.bmp, "image/bmp"),
        (samples.tiff, "image/tiff"),
    ],
)
def test_fit_converts_to_jpeg(make: Callable[..., bytes], mime: str) -> None:
    data = make(320, 240)
    derived = fit_for_mms(io.BytesIO(data), info_of(data, mime), budget_bytes=5_000_000)
    assert (derived.content_type, derived.width, derived.height) == ("image/jpeg", 320, 240)
    assert_no_metadata(derived)


def test_fit_heic_with_gps_and_a_small_budget() -> None:
    data = samples.heic(640, 480, gps=True)
    derived = fit_for_mms(io.BytesIO(data), info_of(data), budget_bytes=15_000)
    assert len(derived.data) <= 15_000
    assert derived.content_type == "image/jpeg"
    assert_no_metadata(derived)


def test_fit_transparent_heic_becomes_png() -> None:
    data = samples.heic(64, 48, alpha=True)
    derived = fit_for_mms(io.BytesIO(data), info_of(data), budget_bytes=600_000)
    assert derived.content_type == "image/png"
    assert_no_metadata(derived)


def test_fit_oversize_png_becomes_jpeg() -> None:
    data = samples.png(1200, 900, noise=10)
    assert len(data) > 600_000
    derived = fit_for_mms(io.BytesIO(data), info_of(data), budget_bytes=600_000)
    assert len(derived.data) <= 600_000
    assert derived.content_type == "image/jpeg"
    assert_no_metadata(derived)


def test_fit_oversize_transparent_png_stays_png() -> None:
    data = samples.png(800, 600, alpha=True, noise=10)
    budget = len(data) // 3
    derived = fit_for_mms(io.BytesIO(data), info_of(data), budget_bytes=budget)
    assert len(derived.data) <= budget
    im = assert_no_metadata(derived)
    assert im.mode == "RGBA"
    assert derived.width < 800


def test_fit_rotated_jpeg_within_budget_is_turned_upright() -> None:
    data = samples.rotated_jpeg(orientation=6, gps=True)
    result = fit(io.BytesIO(data), info_of(data), budget_bytes=600_000)
    assert (result.derived.width, result.derived.height) == (30, 60)
    assert result.encode_passes == 1
    assert_no_metadata(result.derived)


def test_fit_within_budget_keeps_the_original_pixels() -> None:
    data = samples.jpeg(640, 480, gps=True, orientation=1)
    result = fit(io.BytesIO(data), info_of(data), budget_bytes=600_000)
    assert result.encode_passes == 0
    assert result.derived.data.endswith(data[data.index(b"\xff\xda") :])
    assert_no_metadata(result.derived)


def test_fit_animated_gif_keeps_its_animation() -> None:
    data = samples.gif_photo_animated()
    source = Image.open(io.BytesIO(data))
    durations = [frame.info["duration"] for frame in ImageSequence.Iterator(source)]
    budget = len(data) // 2
    result = fit(io.BytesIO(data), info_of(data), budget_bytes=budget)
    derived = result.derived
    assert len(derived.data) <= budget
    assert derived.content_type == "image/gif"
    out = Image.open(io.BytesIO(derived.data))
    assert frame_count(out) == frame_count(source) == 12
    assert [frame.info["duration"] for frame in ImageSequence.Iterator(out)] == durations
    assert out.info.get("loop") == 0
    assert derived.width < source.width


def test_fit_small_animation_keeps_frame_count_and_timing() -> None:
    data = samples.gif_animated(frames=9, width=300, height=200, duration=120, loop=3)
    budget = int(len(data) * 0.6)
    derived = fit_for_mms(io.BytesIO(data), info_of(data), budget_bytes=budget)
    out = Image.open(io.BytesIO(derived.data))
    assert len(derived.data) <= budget
    assert frame_count(out) == 9
    assert out.info.get("loop") == 3
    assert [f.info["duration"] for f in ImageSequence.Iterator(out)] == [
        120 + 10 * (i % 3) for i in range(9)
    ]


def test_fit_impossible_budget_is_too_large() -> None:
    data = samples.jpeg(800, 600)
    with pytest.raises(MediaError) as exc:
        fit_for_mms(io.BytesIO(data), info_of(data), budget_bytes=300)
    assert exc.value.reason == "too_large"


def test_fit_refuses_what_it_cannot_fix() -> None:
    for data, reason in [
        (samples.pdf(), "unsupported_type"),
        (samples.truncated(samples.jpeg(300, 200)), "corrupt"),
        (samples.png_bomb(), "decompression_bomb"),
        (b"", "empty"),
    ]:
        with pytest.raises(MediaError) as exc:
            fit_for_mms(io.BytesIO(data), info_of(data), budget_bytes=600_000)
        assert exc.value.reason == reason
    with pytest.raises(ValueError, match="budget_bytes"):
        fit_for_mms(io.BytesIO(samples.jpeg()), info_of(samples.jpeg()), budget_bytes=0)
