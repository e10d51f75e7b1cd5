"""Derivatives of received and outgoing images.

raster        opening (restricted to the raster formats of the type table, pixel
              cap before decoding) and encoding without metadata; shared below
thumbnails    thumbnails, their perceptual hashes, the upright grey image OCR reads
strip         metadata removal, lossless for upright JPEG, PNG and GIF
fit           an image into a byte budget (MMS, WhatsApp), animations to MP4

Output never carries EXIF, GPS, XMP or text metadata; EXIF orientation is
applied to the pixels first so nothing turns sideways when the tag
disappears. ICC colour profiles are kept (they are not personal data and
phones shoot in Display P3).
"""

from receiver.media.transform.fit import (
    ANIMATION_TIMEOUT,
    FitResult,
    animation_to_mp4,
    estimate_jpeg_quality,
    fit,
    fit_for_mms,
)
from receiver.media.transform.raster import Derived
from receiver.media.transform.strip import (
    strip_gif_blocks,
    strip_jpeg_segments,
    strip_metadata,
    strip_png_chunks,
)
from receiver.media.transform.thumbnails import (
    THUMBNAIL_QUALITY,
    make_thumbnail,
    perceptual_hash,
    upright_grey,
)

__all__ = [
    "ANIMATION_TIMEOUT",
    "THUMBNAIL_QUALITY",
    "Derived",
    "FitResult",
    "animation_to_mp4",
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
