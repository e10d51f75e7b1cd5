"""Derivatives of received and outgoing images: thumbnails, metadata stripping, fit-to-budget.

Everything here decodes pixels, so every entry point opens the file with
Pillow restricted to the raster formats of the type table and refuses images
over a pixel cap before decoding. Output never carries EXIF, GPS, XMP or text
metadata; EXIF orientation is applied to the pixels first so nothing turns
sideways when the tag disappears. ICC colour profiles are kept (they are not
personal data and phones shoot in Display P3).

`fit_for_mms` predicts the encoded size instead of searching for it:

1. A bytes-per-pixel model gives the size at full resolution for the output
   quality: for a JPEG source, its own bytes per pixel rescaled by a
   quality curve (the source quality is read from its quantisation tables)
   and its chroma subsampling; for other sources, a photo prior.
2. Bytes scale with pixel count to the power alpha (0.9 by default; noisy
   images shrink faster, detailed ones slower), which gives the scale.
3. The JPEG is decoded with DCT scaling (``draft``) at the largest
   power-of-two reduction (1/2, 1/4, 1/8) that still covers that scale, so a
   12-megapixel photo is often never decoded at full size. Between 1/2 and
   5/8 the half-size decode is kept and quality makes up the difference: a
   full decode plus resize costs several times more.
4. The model is calibrated on a sample: every fourth 16-row band of the
   output is resized and encoded (about a quarter of the work, accurate to
   a few percent because JPEG codes blocks independently); scale or quality
   is corrected from that measurement. A JPEG the model puts far under the
   budget skips this step.
5. One full encode. If it still misses the budget, a corrective pass uses the
   measured size; the common case is a single encode.
"""

from __future__ import annotations

import io
import itertools
import math
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageSequence, JpegImagePlugin

from receiver.errors import MediaError
from receiver.media import types
from receiver.media.heif import open_image
from receiver.media.inspect import MediaInfo
from receiver.media.phash import dhash

__all__ = [
    "Derived",
    "FitResult",
    "estimate_jpeg_quality",
    "fit",
    "fit_for_mms",
    "make_thumbnail",
    "perceptual_hash",
    "strip_gif_blocks",
    "strip_jpeg_segments",
    "strip_metadata",
    "strip_png_chunks",
    "upright_grey",
]

#: Pillow formats any function here may open (the raster rows of the type table).
RASTER_FORMATS = tuple(sorted(set(types.PILLOW_FORMATS.values())))

THUMBNAIL_QUALITY = 80
#: Output quality for fitted JPEGs, and its bounds when the budget needs a different one.
JPEG_QUALITY = 85
MIN_JPEG_QUALITY = 60
MAX_JPEG_QUALITY = 95
#: Aim this far under the budget: the sampled estimate is accurate to a few percent.
FILL = 0.93
#: The long side a fitted image may be reduced to before quality is lowered instead.
MIN_LONG_SIDE = 480
MAX_ENCODE_PASSES = 4
#: A JPEG predicted under this share of the target is encoded without sampling first.
SKIP_SAMPLE_BELOW = 0.6
MAX_ESTIMATES = 4
#: Total pixels across all frames an animation may expand to while it is re-encoded.
MAX_ANIMATION_PIXELS = 150_000_000
DEFAULT_MAX_PIXELS = 50_000_000

# Relative JPEG size by quality (libjpeg scaling, 4:2:0), normalised at 85; the
# middle of curves measured on photos and noisy synthetic images.
_QUALITY_CURVE = (
    (10, 0.17),
    (30, 0.33),
    (50, 0.45),
    (60, 0.52),
    (70, 0.62),
    (75, 0.70),
    (80, 0.82),
    (85, 1.00),
    (90, 1.33),
    (92, 1.55),
    (95, 2.10),
    (98, 3.30),
    (100, 5.00),
)
#: A 4:4:4 JPEG against a 4:2:0 one of the same quality.
_FULL_CHROMA_FACTOR = 1.45
#: Bytes per pixel of a 4:2:0 photo at quality 85 when the source says nothing.
_PRIOR_BYTES_PER_PIXEL = 0.28
_ALPHA = 0.9
_BAND = 16
_BAND_STEP = 4

_IJG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip

# PNG chunks kept when metadata is stripped without re-encoding: what decoding
# and colour need, plus APNG animation. Text, EXIF, time and private chunks go.
_PNG_KEEP = frozenset(
    {
        b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB",
        b"iCCP", b"sBIT", b"pHYs", b"bKGD", b"acTL", b"fcTL", b"fdAT", b"cICP",
    }
)  # fmt: skip
# JPEG APPn segments kept: JFIF (APP0), ICC profile (APP2 "ICC_PROFILE"), Adobe
# colour transform (APP14). EXIF/XMP (APP1), IPTC (APP13), comments and MPF go.
_JPEG_KEEP_APPS = frozenset({0xE0, 0xEE})


@dataclass(frozen=True)
class Derived:
    """An encoded image made from another one."""

    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    #: The perceptual hash of the picture (thumbnails only): receiver.media.phash.
    phash: int | None = None


@dataclass(frozen=True)
class FitResult:
    """What `fit()` made and how: for logs, metrics and the benchmark."""

    derived: Derived
    #: Full encodes of the output (0 when the original was kept, stripped losslessly).
    encode_passes: int
    #: Sampled estimates (a quarter of an encode each) used to calibrate the prediction.
    estimates: int
    #: Size the model predicted before calibration (None when nothing was predicted).
    predicted_bytes: int | None
    quality: int | None
    #: Linear scale of the output against the (orientation-corrected) original.
    scale: float


# --- opening ----------------------------------------------------------------------


def _open(fp: BinaryIO, max_pixels: int) -> Image.Image:
    """Open lazily, restricted to accepted raster formats; refuse bombs before decoding."""
    try:
        im = open_image(fp, RASTER_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(f"image too large to decode safely: {exc}", "decompression_bomb") from None
    except Exception as exc:
        raise MediaError(f"not a readable image: {exc}", "corrupt") from None
    if im.width * im.height > max_pixels:
        size = f"{im.width}x{im.height}"
        im.close()
        raise MediaError(
            f"{size} image is over the {max_pixels:,}-pixel limit", "decompression_bomb"
        )
    return im


def _load(im: Image.Image) -> None:
    try:
        im.load()
    except Exception as exc:
        raise MediaError(f"the image data is damaged or truncated: {exc}", "corrupt") from None


def _has_alpha(im: Image.Image) -> bool:
    """Whether any pixel is actually transparent (an opaque alpha channel does not count)."""
    if im.mode in ("RGBA", "LA", "PA"):
        alpha = im.getchannel("A")
    elif "transparency" in im.info:
        alpha = im.convert("RGBA").getchannel("A")
    else:
        return False
    lowest, _ = alpha.getextrema()
    return bool(lowest < 255)  # type: ignore[operator]


def _output_image(im: Image.Image) -> tuple[Image.Image, str]:
    """Convert to a mode the output format stores: (image, "JPEG" or "PNG")."""
    if _has_alpha(im):
        return (im if im.mode == "RGBA" else im.convert("RGBA")), "PNG"
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: keep the top 8 bits (a plain convert("L") would clip).
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L"), "JPEG"
    if im.mode in ("L", "RGB"):
        return im, "JPEG"
    if im.mode == "1":
        return im.convert("L"), "JPEG"
    return im.convert("RGB"), "JPEG"


def _encode(im: Image.Image, fmt: str, *, quality: int = JPEG_QUALITY, icc: bytes | None) -> bytes:
    """Encode without any metadata except the colour profile."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=quality, subsampling=2, icc_profile=icc)
    else:
        im.save(buf, "PNG", compress_level=6, icc_profile=icc)
    return buf.getvalue()


def _derived(data: bytes, fmt: str, size: tuple[int, int]) -> Derived:
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif"}[fmt]
    return Derived(data, mime, types.extension_of(mime), size[0], size[1])


# --- thumbnails and stripping -------------------------------------------------------


def make_thumbnail(
    fp: BinaryIO, *, max_side: int = 320, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Derived:
    """A small JPEG (PNG when transparent) of the first frame, upright, without metadata,
    with the perceptual hash of that frame (`Derived.phash`).

    JPEGs decode with DCT scaling and HEIC uses its embedded thumbnail when one
    is big enough (both through ``draft``), so a 12-megapixel photo is never
    decoded at full size. Raises MediaError (corrupt, decompression_bomb).
    """
    frame = _thumbnail_frame(fp, max_side, max_pixels)
    out, fmt = _output_image(frame)
    data = _encode(out, fmt, quality=THUMBNAIL_QUALITY, icc=frame.info.get("icc_profile"))
    # Hashed here, from the frame already decoded small, so the hash costs microseconds.
    return replace(_derived(data, fmt, out.size), phash=dhash(frame))


def perceptual_hash(
    fp: BinaryIO, *, max_side: int = 320, max_pixels: int = DEFAULT_MAX_PIXELS
) -> int:
    """The perceptual hash `make_thumbnail` gives (the same frame, so the same bits),
    without encoding a thumbnail nobody stores: for backfills and on-demand hashes.

    Raises MediaError (corrupt, decompression_bomb).
    """
    return dhash(_thumbnail_frame(fp, max_side, max_pixels))


def _thumbnail_frame(fp: BinaryIO, max_side: int, max_pixels: int) -> Image.Image:
    """The first frame, upright, within `max_side`, decoded as small as the format allows."""
    if max_side <= 0:
        raise ValueError(f"max_side: must be positive, got {max_side}")
    with _open(fp, max_pixels) as im:
        orientation = _orientation_of(im)
        # The bounding box is square, so the stored (pre-rotation) size fits it too.
        # Asking for the final size lets HEIF pick an embedded thumbnail of exactly it,
        # and JPEG the smallest DCT scale (down to 1/8) still at least that size.
        scale = min(1.0, max_side / max(im.size))
        im.draft("RGB", _scaled(im.size, scale))
        _load(im)
        frame = im.copy()
    # Bilinear: Pillow widens its support when shrinking, so it still averages
    # every source pixel; at 320 px it looks the same as bicubic for 60% of
    # the resize CPU (docs/performance.md).
    frame.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return _transpose(frame, orientation)


def upright_grey(
    fp: BinaryIO, *, max_pixels_out: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """The first frame as upright 8-bit greyscale of at most `max_pixels_out` pixels
    (for text recognition).

    JPEGs decode with DCT scaling (``draft``), so a 50-megapixel photo is decoded
    at a fraction of its size; other formats decode whole under the `max_pixels`
    cap and are then reduced. Raises MediaError (corrupt, decompression_bomb).
    """
    if max_pixels_out <= 0:
        raise ValueError(f"max_pixels_out: must be positive, got {max_pixels_out}")
    with _open(fp, max_pixels) as im:
        orientation = _orientation_of(im)
        scale = min(1.0, math.sqrt(max_pixels_out / (im.width * im.height)))
        # draft() never goes below the requested size, so the decode stays legible.
        im.draft("L", _scaled(im.size, scale))
        _load(im)
        frame, _ = _output_image(im)
        if frame.mode == "RGBA":
            # Dark text on a transparent background must not turn black on black.
            white = Image.new("RGBA", frame.size, (255, 255, 255, 255))
            frame = Image.alpha_composite(white, frame)
        grey = frame.convert("L") if frame.mode != "L" else frame.copy()
    if grey.width * grey.height > max_pixels_out:
        scale = math.sqrt(max_pixels_out / (grey.width * grey.height))
        grey = grey.resize(_scaled(grey.size, scale), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return _transpose(grey, orientation)


def _orientation_of(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


_TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def _transpose(im: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation read before decoding (same table as ImageOps.exif_transpose).

    The tag is read up front because a decoded copy no longer carries it.
    """
    for op in _TRANSPOSE.get(orientation, ()):
        im = im.transpose(op)
    return im


def strip_metadata(
    fp: BinaryIO, info: MediaInfo, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Derived:
    """The image without EXIF/GPS/XMP/text metadata, orientation applied to the pixels.

    Upright JPEG, PNG and GIF files lose their metadata segments without being
    re-encoded (no generation loss). A rotated JPEG is re-encoded with its own
    quantisation tables and subsampling. Animations stay animated (as GIF when
    they are not GIF already). Other formats (HEIC, WebP, BMP, TIFF, AVIF)
    become JPEG, or PNG when transparent. Raises MediaError for non-images and
    bad files.
    """
    _require_raster(info)
    if (info.orientation or 1) == 1:
        kept = _keep_losslessly(fp, info)
        if kept is not None:
            return kept
    with _open(fp, max_pixels) as im:
        if info.animated:
            return _encode_gif(im, scale=1.0)
        orientation = _orientation_of(im)
        _load(im)
        icc = im.info.get("icc_profile")
        upright = _transpose(im, orientation)
        out, fmt = _output_image(upright)
        if _is_jpeg(im) and fmt == "JPEG":
            buf = io.BytesIO()
            # The source's own tables: no visible loss beyond one decode/encode round.
            out.save(
                buf,
                "JPEG",
                qtables=getattr(im, "quantization", None),
                subsampling=_jpeg_sampling(im),
                icc_profile=icc,
            )
            return _derived(buf.getvalue(), "JPEG", out.size)
        if info.detected_type == "image/png":
            fmt = "PNG"
        return _derived(_encode(out, fmt, quality=90, icc=icc), fmt, out.size)


def _is_jpeg(im: Image.Image) -> bool:
    """JPEG, including multi-picture (MPO) files, which Pillow opens as a JPEG subclass."""
    return isinstance(im, JpegImagePlugin.JpegImageFile)


def _jpeg_sampling(im: Image.Image) -> int:
    sampling = JpegImagePlugin.get_sampling(im)
    return sampling if sampling >= 0 else 2


def _require_raster(info: MediaInfo) -> None:
    if info.problem is not None:
        raise MediaError(info.detail or f"the file is {info.problem}", info.problem)
    if info.detected_type not in types.RASTER_TYPES:
        raise MediaError(
            f"{info.detected_type} is not an image this service can convert", "unsupported_type"
        )


# --- lossless metadata removal ------------------------------------------------------


def strip_jpeg_segments(data: bytes) -> bytes:
    """Remove EXIF, XMP, IPTC, comments and trailers from a JPEG without re-encoding.

    Keeps JFIF, ICC profile and Adobe segments (they change how pixels decode)
    and everything from the first scan to the image's end-of-image marker.
    Raises ValueError on a malformed file.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI marker)")
    out = bytearray(b"\xff\xd8")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"malformed JPEG: no marker at {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xDA:
            end = data.find(b"\xff\xd9", pos)
            if end < 0:
                raise ValueError("truncated JPEG: no end-of-image marker")
            out += data[pos : end + 2]
            return bytes(out)
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos : pos + 2 + length]
        keep = not (0xE0 <= marker <= 0xEF or marker == 0xFE)
        keep = keep or marker in _JPEG_KEEP_APPS
        keep = keep or (marker == 0xE2 and segment[4:16] == b"ICC_PROFILE\x00")
        if keep:
            out += segment
        pos += 2 + length
    raise ValueError("malformed JPEG: no image data")


def strip_gif_blocks(data: bytes) -> bytes:
    """Remove comments and application blocks (XMP and the like) from a GIF, losslessly.

    The loop count (NETSCAPE2.0 / ANIMEXTS1.0 application block), graphic
    control blocks and every frame are kept. Raises ValueError on a malformed file.
    """
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise ValueError("not a GIF")
    flags = data[10]
    pos = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    out = bytearray(data[:pos])
    try:
        while pos < len(data):
            block = data[pos]
            if block == 0x3B:
                break
            if block == 0x21:
                label = data[pos + 1]
                end = _skip_gif_sub_blocks(data, pos + 2)
                if label == 0xFE:
                    keep = False
                elif label == 0xFF:
                    keep = data[pos + 3 : pos + 14] in (b"NETSCAPE2.0", b"ANIMEXTS1.0")
                else:
                    keep = True
            elif block == 0x2C:
                packed = data[pos + 9]
                table = (3 << ((packed & 7) + 1)) if packed & 0x80 else 0
                end = _skip_gif_sub_blocks(data, pos + 10 + table + 1)
                keep = True
            else:
                raise ValueError(f"malformed GIF: unknown block 0x{block:02x} at {pos}")
            if keep:
                out += data[pos:end]
            pos = end
    except IndexError:
        raise ValueError("truncated GIF") from None
    out.append(0x3B)
    return bytes(out)


def _skip_gif_sub_blocks(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        pos += 1 + length
        if length == 0:
            if pos > len(data):
                raise IndexError(pos)
            return pos


def strip_png_chunks(data: bytes) -> bytes:
    """Remove text, EXIF, time and private chunks from a PNG without re-encoding."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    out = bytearray(data[:8])
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind in _PNG_KEEP:
            out += data[pos:end]
        pos = end
        if kind == b"IEND":
            return bytes(out)
    raise ValueError("truncated PNG: no IEND chunk")


# --- fitting to a byte budget -------------------------------------------------------


def fit_for_mms(fp: BinaryIO, info: MediaInfo, *, budget_bytes: int) -> Derived:
    """Make an image MMS can carry within `budget_bytes`, without EXIF/GPS.

    HEIC/HEIF, WebP, BMP, TIFF and AVIF become JPEG (PNG when transparent);
    JPEG/PNG over the budget are resized and recompressed; an animated GIF over
    the budget is shrunk keeping every frame, duration and its loop count.
    Files already within the budget are kept as they are, with metadata
    removed losslessly. Raises MediaError(reason="too_large") when the image
    cannot fit, and MediaError with the inspection's problem for bad files.
    """
    return fit(fp, info, budget_bytes=budget_bytes).derived


def fit(
    fp: BinaryIO, info: MediaInfo, *, budget_bytes: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> FitResult:
    """`fit_for_mms` with a report of how the result was made (passes, estimates, scale)."""
    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes: must be positive, got {budget_bytes}")
    _require_raster(info)
    mime = info.detected_type
    rotated = (info.orientation or 1) != 1

    if info.size_bytes <= budget_bytes and not rotated:
        kept = _keep_losslessly(fp, info)
        if kept is not None:
            return FitResult(kept, 0, 0, None, None, 1.0)

    with _open(fp, max_pixels) as im:
        if info.animated and mime in ("image/gif", "image/png", "image/webp"):
            return _fit_animation(im, info, budget_bytes)
        return _fit_still(im, info, budget_bytes)


def _keep_losslessly(fp: BinaryIO, info: MediaInfo) -> Derived | None:
    """The original bytes minus metadata, when its type can go out as it is."""
    if info.width is None or info.height is None:
        return None
    if info.detected_type not in ("image/jpeg", "image/png", "image/gif"):
        return None
    fp.seek(0)
    data = fp.read()
    size = (info.width, info.height)
    try:
        if info.detected_type == "image/jpeg":
            return _derived(strip_jpeg_segments(data), "JPEG", size)
        if info.detected_type == "image/png":
            return _derived(strip_png_chunks(data), "PNG", size)
        if info.detected_type == "image/gif":
            return _derived(strip_gif_blocks(data), "GIF", size)
    except ValueError:
        return None
    return None


@dataclass
class _Plan:
    """The size model for one still image: bytes at full resolution and how they scale."""

    full_bytes: float
    alpha: float = _ALPHA

    def bytes_at(self, scale: float) -> float:
        return self.full_bytes * scale ** (2 * self.alpha)

    def scale_for(self, target: float) -> float:
        return float((target / self.full_bytes) ** (1 / (2 * self.alpha)))


def _quality_factor(quality: int) -> float:
    """Relative JPEG size at `quality` (piecewise-linear in the curve table)."""
    q = min(max(quality, 1), 100)
    for (q0, f0), (q1, f1) in itertools.pairwise(_QUALITY_CURVE):
        if q0 <= q <= q1:
            return f0 + (f1 - f0) * (q - q0) / (q1 - q0)
    return _QUALITY_CURVE[0][1]


def _quality_for_factor(factor: float) -> int:
    """Inverse of _quality_factor: the quality whose relative size is `factor`."""
    for (q0, f0), (q1, f1) in itertools.pairwise(_QUALITY_CURVE):
        if f0 <= factor <= f1:
            return int(q0 + (q1 - q0) * (factor - f0) / (f1 - f0))
    return 100 if factor > _QUALITY_CURVE[-1][1] else _QUALITY_CURVE[0][0]


def estimate_jpeg_quality(im: Image.Image) -> int | None:
    """The libjpeg quality a JPEG was saved with, from its luminance quantisation table."""
    tables = getattr(im, "quantization", None)
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    ratio = 100.0 * sum(tables[0]) / sum(_IJG_LUMA)
    quality = (200.0 - ratio) / 2.0 if ratio <= 100 else 5000.0 / ratio
    return int(min(max(round(quality), 1), 100))


def _initial_plan(im: Image.Image, info: MediaInfo, quality: int) -> _Plan:
    """Predicted bytes at full resolution and `quality`, from the source's own bytes per pixel."""
    pixels = im.width * im.height
    if _is_jpeg(im):
        source_quality = estimate_jpeg_quality(im) or JPEG_QUALITY
        source_factor = _quality_factor(source_quality)
        if _jpeg_sampling(im) == 0:
            source_factor *= _FULL_CHROMA_FACTOR
        full = info.size_bytes * _quality_factor(quality) / source_factor
    else:
        # Lossless or foreign codecs say little about JPEG size: use a photo prior.
        full = pixels * _PRIOR_BYTES_PER_PIXEL * _quality_factor(quality)
    return _Plan(full_bytes=max(full, 1.0))


def _draft_reduction(im: Image.Image, scale: float) -> int:
    """The DCT reduction (1, 2, 4 or 8) to decode a JPEG with, for an output at `scale`.

    Decoding reduced is nearly free next to decoding and resizing a full image,
    so the largest reduction that still covers `scale` is used; between 1/2 and
    5/8 the half-size decode is taken and quality makes up the difference,
    because a full decode plus resize costs several times more.
    """
    if not _is_jpeg(im):
        return 1
    for k in (8, 4, 2):
        if scale <= 1 / k or (k == 2 and scale <= 0.625):
            return k
    return 1


class _Sampler:
    """Encoded-size estimates of `base` resized by a scale, from every fourth band of rows."""

    def __init__(self, base: Image.Image, fmt: str, icc: bytes | None) -> None:
        self.base = base
        self.fmt = fmt
        self.icc = icc
        self.count = 0
        self._overhead: dict[int, int] = {}

    def _header(self, quality: int) -> int:
        if quality not in self._overhead:
            tiny = Image.new(self.base.mode, (16, 16))
            self._overhead[quality] = len(_encode(tiny, self.fmt, quality=quality, icc=self.icc))
        return self._overhead[quality]

    def estimate(self, scale: float, quality: int) -> float:
        self.count += 1
        width, height = _scaled(self.base.size, scale)
        rows = list(range(0, max(height - _BAND + 1, 1), _BAND * _BAND_STEP))
        if height <= _BAND * _BAND_STEP * 2:
            return float(len(self.encode(self.resize(scale), quality)))
        sample = Image.new(self.base.mode, (width, _BAND * len(rows)))
        sy = self.base.height / height
        for i, y in enumerate(rows):
            if (width, height) == self.base.size:
                band = self.base.crop((0, y, width, y + _BAND))
            else:
                # Resizing just this band (the box) gives the rows the full resize would.
                box = (0.0, y * sy, float(self.base.width), (y + _BAND) * sy)
                band = self.base.resize((width, _BAND), Image.Resampling.BICUBIC, box=box)
            sample.paste(band, (0, i * _BAND))
        header = self._header(quality)
        body = len(self.encode(sample, quality)) - header
        return header + body * height / sample.height

    def resize(self, scale: float) -> Image.Image:
        size = _scaled(self.base.size, scale)
        if size == self.base.size:
            return self.base
        return self.base.resize(size, Image.Resampling.BICUBIC)

    def encode(self, im: Image.Image, quality: int) -> bytes:
        return _encode(im, self.fmt, quality=quality, icc=self.icc)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _fit_still(im: Image.Image, info: MediaInfo, budget: int) -> FitResult:
    target = budget * FILL
    orientation = _orientation_of(im)
    source_quality = estimate_jpeg_quality(im) if _is_jpeg(im) else None
    quality = min(JPEG_QUALITY, source_quality or JPEG_QUALITY)
    plan = _initial_plan(im, info, quality)
    predicted = plan.bytes_at(1.0)
    wanted = min(1.0, plan.scale_for(target))

    full_size = im.size
    reduction = _draft_reduction(im, wanted)
    if reduction > 1:
        im.draft("RGB", (im.width // reduction, im.height // reduction))
    _load(im)
    icc = im.info.get("icc_profile")
    upright = _transpose(im, orientation)
    base, fmt = _output_image(upright)
    # Scales below are relative to the decoded image; report them against the original.
    decoded = base.width / (full_size[1] if orientation >= 5 else full_size[0])
    sampler = _Sampler(base, fmt, icc)
    min_scale = min(1.0, MIN_LONG_SIDE / max(base.size))

    if fmt == "PNG":
        # Transparent images stay PNG; deflate sizes scale about with pixel count.
        plan = _Plan(full_bytes=sampler.estimate(1.0, quality), alpha=1.0)
        scale = min(1.0, plan.scale_for(target))
    elif decoded >= 1.0 and _is_jpeg(im) and predicted <= SKIP_SAMPLE_BELOW * target:
        # The source's own bytes put the full-size result far under the budget;
        # the encode itself is the check (a corrective pass follows if it is not).
        scale = 1.0
    else:
        scale = min(1.0, wanted / decoded)
        ceiling = quality if decoded >= 1.0 else min(MAX_JPEG_QUALITY, source_quality or 100)
        scale, quality = _calibrate(
            sampler, plan, scale, quality, target, min_scale=min_scale, max_quality=ceiling
        )

    passes = 0
    while True:
        passes += 1
        out = sampler.resize(scale)
        data = sampler.encode(out, quality)
        if len(data) <= budget:
            return FitResult(
                _derived(data, fmt, out.size),
                passes,
                sampler.count,
                round(predicted),
                quality if fmt == "JPEG" else None,
                round(scale * decoded, 4),
            )
        if passes >= MAX_ENCODE_PASSES:
            break
        # Corrective pass from the measured size, a little more conservative.
        factor = (target / len(data)) ** (1 / (2 * plan.alpha)) * 0.97
        if scale * factor < min_scale and fmt == "JPEG" and quality > MIN_JPEG_QUALITY:
            scale = max(min_scale, scale * factor)
            quality = max(MIN_JPEG_QUALITY, quality - 10)
        else:
            scale *= factor
        if min(_scaled(base.size, scale)) < 16:
            break
    raise MediaError(
        f"the image cannot be made smaller than {len(data):,} bytes; budget is {budget:,}",
        "too_large",
    )


def _calibrate(
    sampler: _Sampler,
    plan: _Plan,
    scale: float,
    quality: int,
    target: float,
    *,
    min_scale: float,
    max_quality: int,
) -> tuple[float, int]:
    """Correct the predicted scale (or quality) with sampled estimates; returns (scale, quality).

    Scales are relative to the decoded image. Quality goes up only when the
    decoded image is already smaller than wanted (a DCT-scaled decode) and no
    higher than `max_quality`; it goes down only when the scale would drop
    below `min_scale`.
    """
    points: list[tuple[float, float]] = []
    base_quality = quality
    for _ in range(MAX_ESTIMATES):
        estimate = sampler.estimate(scale, quality)
        if 0.85 * target <= estimate <= target:
            break
        if scale >= 1.0 and (estimate < target or quality > base_quality):
            # Resolution is at its decoded maximum: quality is the lever, but it
            # never drops below where it started (resolution goes first then).
            wanted = _requality(quality, target / estimate, ceiling=max_quality)
            wanted = max(wanted, base_quality)
            if wanted == quality:
                break
            quality = wanted
            points.clear()
            continue
        points.append((scale, estimate))
        if len(points) >= 2:
            (s0, e0), (s1, e1) = points[-2:]
            if s0 != s1 and e0 != e1:
                plan.alpha = min(max(math.log(e1 / e0) / math.log(s1 / s0) / 2, 0.4), 2.0)
        new_scale = min(1.0, scale * (target / estimate) ** (1 / (2 * plan.alpha)))
        if new_scale < min_scale and quality > MIN_JPEG_QUALITY:
            # Do not shrink a photo into a stamp: lower the quality first.
            at_min = estimate * (min_scale / scale) ** (2 * plan.alpha)
            scale = min_scale
            quality = _requality(quality, target / at_min, ceiling=quality)
            points.clear()
            continue
        scale = new_scale
    return scale, quality


def _requality(quality: int, factor: float, *, ceiling: int) -> int:
    """The quality whose size is `factor` times that of `quality` (bounded by `ceiling`)."""
    wanted = _quality_for_factor(_quality_factor(quality) * factor)
    return max(min(wanted, ceiling), MIN_JPEG_QUALITY)


# --- animations ---------------------------------------------------------------------


def _frames(im: Image.Image, scale: float, transparent: bool) -> Iterator[Image.Image]:
    """Every frame, composited, resized, carrying its own duration (memory: one frame).

    Opaque frames get their own 256-colour octree palette: fast, and stable
    between similar frames, so the GIF writer still stores only what changed.
    """
    size = _scaled(im.size, scale)
    for frame in ImageSequence.Iterator(im):
        duration = frame.info.get("duration", 100)
        out = frame.convert("RGBA" if transparent else "RGB")
        if out.size != size:
            out = out.resize(size, Image.Resampling.BICUBIC)
        if not transparent:
            out = out.quantize(256, method=Image.Quantize.FASTOCTREE)
        out.info["duration"] = duration
        yield out


def _encode_gif(im: Image.Image, scale: float) -> Derived:
    transparent = "transparency" in im.info or im.mode in ("RGBA", "LA", "PA")
    frames = _frames(im, scale, transparent)
    try:
        first = next(frames)
        params: dict[str, object] = {"save_all": True, "append_images": frames}
        if transparent:
            # Each frame is a full composite; clearing to the background before the
            # next one keeps pixels that became transparent from showing through.
            params["disposal"] = 2
        if "loop" in im.info:
            params["loop"] = im.info["loop"]
        buf = io.BytesIO()
        first.save(buf, "GIF", **params)
    except (OSError, ValueError, EOFError, StopIteration) as exc:
        raise MediaError(f"the animation is damaged: {exc}", "corrupt") from None
    return _derived(buf.getvalue(), "GIF", first.size)


def _fit_animation(im: Image.Image, info: MediaInfo, budget: int) -> FitResult:
    """Shrink an animation (GIF, APNG, animated WebP) into a GIF within the budget."""
    frames = int(info.frames or getattr(im, "n_frames", 1) or 1)
    if frames * im.width * im.height > MAX_ANIMATION_PIXELS:
        raise MediaError(
            f"{frames} frames of {im.width}x{im.height} are too many pixels to re-encode",
            "decompression_bomb",
        )
    target = budget * FILL
    # LZW bytes grow about linearly with pixels; the source size is the anchor.
    plan = _Plan(full_bytes=float(info.size_bytes), alpha=1.0)
    predicted = plan.bytes_at(1.0)
    scale = min(1.0, plan.scale_for(target))
    points: list[tuple[float, int]] = []
    for passes in range(1, MAX_ENCODE_PASSES + 2):
        derived = _encode_gif(im, scale)
        size = len(derived.data)
        if size <= budget:
            return FitResult(derived, passes, 0, round(predicted), None, round(scale, 4))
        points.append((scale, size))
        if len(points) >= 2:
            (s0, b0), (s1, b1) = points[-2], points[-1]
            if s0 != s1 and b0 != b1:
                plan.alpha = min(max(math.log(b1 / b0) / math.log(s1 / s0) / 2, 0.4), 2.0)
        scale *= (target / size) ** (1 / (2 * plan.alpha)) * 0.97
        if min(_scaled(im.size, scale)) < 8:
            break
    raise MediaError(
        f"the animation cannot fit {budget:,} bytes without dropping frames", "too_large"
    )


#: How long ffmpeg may take to turn one animation into an MP4.
ANIMATION_TIMEOUT = 60.0


def animation_to_mp4(fp: BinaryIO, *, timeout: float = ANIMATION_TIMEOUT) -> bytes | None:
    """An animated GIF or PNG as a silent H.264 MP4 (yuv420p, even dimensions, index
    first), for channels that play video but not animations; None when ffmpeg is
    missing or cannot convert it (the caller then refuses the file with the fix)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    with tempfile.TemporaryDirectory(prefix="anim-") as tmp:
        source, target = Path(tmp) / "in", Path(tmp) / "out.mp4"
        fp.seek(0)
        source.write_bytes(fp.read())
        fp.seek(0)
        try:
            done = subprocess.run(
                [
                    ffmpeg,
                    "-v",
                    "error",
                    "-y",
                    "-i",
                    str(source),
                    "-vf",
                    "scale=trunc(iw/2)*2:trunc(ih/2)*2",
                    "-c:v",
                    "libx264",
                    "-pix_fmt",
                    "yuv420p",
                    "-movflags",
                    "faststart",
                    "-an",
                    str(target),
                ],
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0 or not target.is_file():
            return None
        return target.read_bytes()
