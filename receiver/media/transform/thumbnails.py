"""Thumbnails, their perceptual hashes, and the upright grey image OCR reads."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import BinaryIO

from PIL import Image

from receiver.media.phash import dhash
from receiver.media.transform.raster import (
    DEFAULT_MAX_PIXELS,
    Derived,
    apply_orientation,
    as_derived,
    encode_image,
    load_pixels,
    open_raster,
    orientation_of,
    output_image,
    scaled_size,
)

__all__ = [
    "THUMBNAIL_QUALITY",
    "make_thumbnail",
    "perceptual_hash",
    "upright_grey",
]

THUMBNAIL_QUALITY = 80


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
    out, fmt = output_image(frame)
    data = encode_image(out, fmt, quality=THUMBNAIL_QUALITY, icc=frame.info.get("icc_profile"))
    # Hashed here, from the frame already decoded small, so the hash costs microseconds.
    return replace(as_derived(data, fmt, out.size), phash=dhash(frame))


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
    with open_raster(fp, max_pixels) as im:
        orientation = orientation_of(im)
        # The bounding box is square, so the stored (pre-rotation) size fits it too.
        # Asking for the final size lets HEIF pick an embedded thumbnail of exactly it,
        # and JPEG the smallest DCT scale (down to 1/8) still at least that size.
        scale = min(1.0, max_side / max(im.size))
        im.draft("RGB", scaled_size(im.size, scale))
        load_pixels(im)
        frame = im.copy()
    # Bilinear: Pillow widens its support when shrinking, so it still averages
    # every source pixel; at 320 px it looks the same as bicubic for 60% of
    # the resize CPU (docs/performance.md).
    frame.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return apply_orientation(frame, orientation)


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
    with open_raster(fp, max_pixels) as im:
        orientation = orientation_of(im)
        scale = min(1.0, math.sqrt(max_pixels_out / (im.width * im.height)))
        # draft() never goes below the requested size, so the decode stays legible.
        im.draft("L", scaled_size(im.size, scale))
        load_pixels(im)
        frame, _ = output_image(im)
        if frame.mode == "RGBA":
            # Dark text on a transparent background must not turn black on black.
            white = Image.new("RGBA", frame.size, (255, 255, 255, 255))
            frame = Image.alpha_composite(white, frame)
        grey = frame.convert("L") if frame.mode != "L" else frame.copy()
    if grey.width * grey.height > max_pixels_out:
        scale = math.sqrt(max_pixels_out / (grey.width * grey.height))
        grey = grey.resize(
            scaled_size(grey.size, scale), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
    return apply_orientation(grey, orientation)
