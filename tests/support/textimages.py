"""Images with rendered text for the OCR tests, and the check that tesseract can read them.

Fonts are Debian's: DejaVu (Latin, umlauts) and IPA Gothic (Japanese), both
installed by .ci/run.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tests.support.services import require

LATIN_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
JAPANESE_FONTS = (
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)

#: What each test image says, by language.
ENGLISH = "Invoice 4711 total due Friday"
GERMAN = "Größe Übermäßig Straße"
JAPANESE = "請求書の合計金額"


def font_path(candidates: tuple[str, ...], package: str) -> str:
    """The first installed font of `candidates` (skips, or fails under CI, when none is)."""
    found = next((p for p in candidates if Path(p).exists()), None)
    require(found is not None, f"no font for the OCR tests; apt-get install {package}")
    assert found is not None
    return found


def require_tesseract(*languages: str) -> None:
    """Skip (fail under CI) unless tesseract and `languages` are installed."""
    from receiver.media.ocr import TextReader

    problems = TextReader(languages or ("eng",)).problems()
    require(not problems, "; ".join(problems))


def render(
    text: str,
    font: str,
    *,
    size: tuple[int, int] = (1400, 260),
    font_size: int = 64,
    at: tuple[int, int] = (40, 90),
) -> Image.Image:
    """Black text on white, as a screenshot or a photographed label shows it."""
    im = Image.new("RGB", size, "white")
    ImageDraw.Draw(im).text(at, text, fill="black", font=ImageFont.truetype(font, font_size))
    return im


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    """`im` as JPEG bytes."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def english() -> bytes:
    return jpeg(render(ENGLISH, font_path(LATIN_FONTS, "fonts-dejavu-core")))


def german() -> bytes:
    return jpeg(render(GERMAN, font_path(LATIN_FONTS, "fonts-dejavu-core")))


def japanese() -> bytes:
    return jpeg(render(JAPANESE, font_path(JAPANESE_FONTS, "fonts-ipafont-gothic")))


def big_page(width: int = 8656, height: int = 5776) -> Image.Image:
    """A 50-megapixel (the pixel cap) greyscale page with one line of large text in its middle."""
    im = Image.new("L", (width, height), 255)
    font = ImageFont.truetype(font_path(LATIN_FONTS, "fonts-dejavu-core"), 400)
    ImageDraw.Draw(im).text((600, height // 2 - 200), ENGLISH, fill=0, font=font)
    return im
