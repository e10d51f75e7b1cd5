"""Metadata stripping: EXIF, GPS, XMP and text go; orientation is applied to the pixels.

Upright JPEG, PNG and GIF files lose their metadata segments without being
re-encoded; everything else is re-encoded (`receiver.media.transform.raster`).
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

from receiver.media.inspect import MediaInfo
from receiver.media.transform.raster import (
    DEFAULT_MAX_PIXELS,
    Derived,
    apply_orientation,
    as_derived,
    encode_gif,
    encode_image,
    is_jpeg,
    jpeg_sampling,
    load_pixels,
    open_raster,
    orientation_of,
    output_image,
    require_raster,
)

__all__ = [
    "keep_losslessly",
    "strip_gif_blocks",
    "strip_jpeg_segments",
    "strip_metadata",
    "strip_png_chunks",
]

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
    require_raster(info)
    if (info.orientation or 1) == 1:
        kept = keep_losslessly(fp, info)
        if kept is not None:
            return kept
    with open_raster(fp, max_pixels) as im:
        if info.animated:
            return encode_gif(im, scale=1.0)
        orientation = orientation_of(im)
        load_pixels(im)
        icc = im.info.get("icc_profile")
        upright = apply_orientation(im, orientation)
        out, fmt = output_image(upright)
        if is_jpeg(im) and fmt == "JPEG":
            buf = io.BytesIO()
            # The source's own tables: no visible loss beyond one decode/encode round.
            out.save(
                buf,
                "JPEG",
                qtables=getattr(im, "quantization", None),
                subsampling=jpeg_sampling(im),
                icc_profile=icc,
            )
            return as_derived(buf.getvalue(), "JPEG", out.size)
        if info.detected_type == "image/png":
            fmt = "PNG"
        return as_derived(encode_image(out, fmt, quality=90, icc=icc), fmt, out.size)


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


def keep_losslessly(fp: BinaryIO, info: MediaInfo) -> Derived | None:
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
            return as_derived(strip_jpeg_segments(data), "JPEG", size)
        if info.detected_type == "image/png":
            return as_derived(strip_png_chunks(data), "PNG", size)
        if info.detected_type == "image/gif":
            return as_derived(strip_gif_blocks(data), "GIF", size)
    except ValueError:
        return None
    return None
