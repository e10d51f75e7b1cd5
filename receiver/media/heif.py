"""Pillow's HEIF/AVIF opener (pillow-heif), loaded the first time a file may need it.

pillow-heif brings libheif and its codecs, about 8 MB per process. Most
workers never see an ISO-BMFF image, so the opener is registered lazily: any
file whose first box is `ftyp` (HEIC, HEIF, AVIF, and MP4/3GPP, which cost
nothing more) registers it before Pillow opens it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import BinaryIO

from PIL import Image

__all__ = ["open_image", "register_heif_opener"]

_lock = threading.Lock()
_registered = False


def register_heif_opener() -> None:
    """Register pillow-heif's opener with Pillow once per process (thread-safe)."""
    global _registered
    if _registered:
        return
    with _lock:
        if not _registered:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _registered = True


def open_image(fp: BinaryIO, formats: Sequence[str]) -> Image.Image:
    """`Image.open(fp, formats=...)` from the start of `fp`, with HEIF support when it may help."""
    fp.seek(0)
    head = fp.read(12)
    fp.seek(0)
    if head[4:8] == b"ftyp":
        register_heif_opener()
    # Pillow fails on a format name it has no opener for; HEIF has none until registered.
    return Image.open(fp, formats=[name for name in formats if name in Image.OPEN])
