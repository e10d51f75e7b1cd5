"""Opening and encoding raster images, shared by thumbnails, stripping and fitting.

Every entry point opens the file with Pillow restricted to the raster formats
of the type table and refuses images over a pixel cap before decoding. Output
never carries EXIF, GPS, XMP or text metadata; EXIF orientation is applied to
the pixels first so nothing turns sideways when the tag disappears. ICC colour
profiles are kept (they are not personal data and phones shoot in Display P3).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageSequence, JpegImagePlugin

from receiver.errors import MediaError
from receiver.media import types
from receiver.media.heif import open_image
from receiver.media.inspect import MediaInfo

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "JPEG_QUALITY",
    "RASTER_FORMATS",
    "Derived",
    "apply_orientation",
    "as_derived",
    "encode_gif",
    "encode_image",
    "has_alpha",
    "is_jpeg",
    "jpeg_sampling",
    "load_pixels",
    "open_raster",
    "orientation_of",
    "output_image",
    "require_raster",
    "scaled_size",
]

#: Pillow formats any function here may open (the raster rows of the type table).
RASTER_FORMATS = tuple(sorted(set(types.PILLOW_FORMATS.values())))
DEFAULT_MAX_PIXELS = 50_000_000
#: Output quality for re-encoded and fitted JPEGs.
JPEG_QUALITY = 85


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


def open_raster(fp: BinaryIO, max_pixels: int) -> Image.Image:
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


def load_pixels(im: Image.Image) -> None:
    try:
        im.load()
    except Exception as exc:
        raise MediaError(f"the image data is damaged or truncated: {exc}", "corrupt") from None


def has_alpha(im: Image.Image) -> bool:
    """Whether any pixel is actually transparent (an opaque alpha channel does not count)."""
    if im.mode in ("RGBA", "LA", "PA"):
        alpha = im.getchannel("A")
    elif "transparency" in im.info:
        alpha = im.convert("RGBA").getchannel("A")
    else:
        return False
    lowest, _ = alpha.getextrema()
    return bool(lowest < 255)  # type: ignore[operator]


def output_image(im: Image.Image) -> tuple[Image.Image, str]:
    """Convert to a mode the output format stores: (image, "JPEG" or "PNG")."""
    if has_alpha(im):
        return (im if im.mode == "RGBA" else im.convert("RGBA")), "PNG"
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: keep the top 8 bits (a plain convert("L") would clip).
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L"), "JPEG"
    if im.mode in ("L", "RGB"):
        return im, "JPEG"
    if im.mode == "1":
        return im.convert("L"), "JPEG"
    return im.convert("RGB"), "JPEG"


def encode_image(
    im: Image.Image, fmt: str, *, quality: int = JPEG_QUALITY, icc: bytes | None
) -> bytes:
    """Encode without any metadata except the colour profile."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=quality, subsampling=2, icc_profile=icc)
    else:
        im.save(buf, "PNG", compress_level=6, icc_profile=icc)
    return buf.getvalue()


def as_derived(data: bytes, fmt: str, size: tuple[int, int]) -> Derived:
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif"}[fmt]
    return Derived(data, mime, types.extension_of(mime), size[0], size[1])


def orientation_of(im: Image.Image) -> int:
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


def apply_orientation(im: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation read before decoding (same table as ImageOps.exif_transpose).

    The tag is read up front because a decoded copy no longer carries it.
    """
    for op in _TRANSPOSE.get(orientation, ()):
        im = im.transpose(op)
    return im


def is_jpeg(im: Image.Image) -> bool:
    """JPEG, including multi-picture (MPO) files, which Pillow opens as a JPEG subclass."""
    return isinstance(im, JpegImagePlugin.JpegImageFile)


def jpeg_sampling(im: Image.Image) -> int:
    sampling = JpegImagePlugin.get_sampling(im)
    return sampling if sampling >= 0 else 2


def require_raster(info: MediaInfo) -> None:
    if info.problem is not None:
        raise MediaError(info.detail or f"the file is {info.problem}", info.problem)
    if info.detected_type not in types.RASTER_TYPES:
        raise MediaError(
            f"{info.detected_type} is not an image this service can convert", "unsupported_type"
        )


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _frames(im: Image.Image, scale: float, transparent: bool) -> Iterator[Image.Image]:
    """Every frame, composited, resized, carrying its own duration (memory: one frame).

    Opaque frames get their own 256-colour octree palette: fast, and stable
    between similar frames, so the GIF writer still stores only what changed.
    """
    size = scaled_size(im.size, scale)
    for frame in ImageSequence.Iterator(im):
        duration = frame.info.get("duration", 100)
        out = frame.convert("RGBA" if transparent else "RGB")
        if out.size != size:
            out = out.resize(size, Image.Resampling.BICUBIC)
        if not transparent:
            out = out.quantize(256, method=Image.Quantize.FASTOCTREE)
        out.info["duration"] = duration
        yield out


def encode_gif(im: Image.Image, scale: float) -> Derived:
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
    return as_derived(buf.getvalue(), "GIF", first.size)
