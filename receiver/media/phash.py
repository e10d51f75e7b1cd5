"""A 64-bit perceptual hash of an image (dHash), for finding the same photo again.

Why dHash with Pillow rather than the `imagehash` library: docs/design.md
("Near-duplicate photos").
"""

from __future__ import annotations

from PIL import Image

__all__ = ["HASH_BITS", "dhash", "distance"]

HASH_BITS = 64
_MASK = (1 << HASH_BITS) - 1


def dhash(im: Image.Image) -> int:
    """The difference hash of `im`: 8 rows of 8 "is the next pixel brighter" bits.

    `im` is meant to be the decoded thumbnail-size frame (already upright), so
    the 9x8 reduction costs microseconds. The first bit is the top-left pair.
    """
    small = im.convert("L").resize((9, 8), Image.Resampling.BOX)
    pixels = small.tobytes()  # "L": one byte per pixel, row by row
    value = 0
    for row in range(8):
        line = pixels[row * 9 : row * 9 + 9]
        for col in range(8):
            value = (value << 1) | (line[col + 1] > line[col])
    return value


def distance(a: int, b: int) -> int:
    """The Hamming distance of two 64-bit hashes (how many bits differ)."""
    return ((a ^ b) & _MASK).bit_count()
