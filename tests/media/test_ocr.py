"""Text in images with the real tesseract: languages, the wall-clock limit, a 50 MP image."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from receiver.media import ocr
from receiver.media.ocr import TextReader, debian_package, parse_languages, tidy
from receiver.media.transform import make_thumbnail, upright_grey
from tests.support import textimages
from tests.support.textimages import require_tesseract


def test_languages_are_parsed_and_bad_names_are_refused() -> None:
    assert parse_languages("") == ()
    assert parse_languages("off") == ()
    assert parse_languages("eng") == ("eng",)
    assert parse_languages(" ENG+deu+jpn+eng ") == ("eng", "deu", "jpn")
    assert parse_languages("chi_sim,eng") == ("chi_sim", "eng")
    for bad in ("english", "eng;rm -rf", "../x", "eng+", "e"):
        with pytest.raises(ValueError, match="RECEIVER_OCR"):
            parse_languages(bad)
    assert debian_package("chi_sim") == "tesseract-ocr-chi-sim"
    assert debian_package("deu") == "tesseract-ocr-deu"


def test_tidy_joins_japanese_and_drops_blank_runs() -> None:
    assert tidy("請 求 書 の\n\n  合計   金額 \n") == "請求書の\n合計金額"
    assert tidy("Total  due\n\n\n4711 ") == "Total due\n4711"
    assert tidy("Tokyo 東 京 Osaka") == "Tokyo 東京 Osaka"
    assert len(tidy("x" * (ocr.MAX_TEXT_CHARS + 50))) == ocr.MAX_TEXT_CHARS


@pytest.mark.parametrize(
    ("make", "languages", "expected"),
    [
        (textimages.english, ("eng",), textimages.ENGLISH),
        (textimages.german, ("deu",), textimages.GERMAN),
        (textimages.japanese, ("jpn",), textimages.JAPANESE),
    ],
    ids=["english", "german", "japanese"],
)
def test_rendered_text_is_read_in_its_language(
    make: object, languages: tuple[str, ...], expected: str
) -> None:
    require_tesseract(*languages)
    reader = TextReader(languages, timeout=60)
    result = reader.read(io.BytesIO(make()))  # type: ignore[operator]
    assert result.outcome == "done", result.detail
    assert result.text == expected
    assert result.languages == "+".join(languages)
    assert 0 < result.seconds < 60


def test_a_missing_language_names_the_debian_package() -> None:
    require_tesseract("eng")
    problems = TextReader(("eng", "fra_xyz")).problems()
    assert len(problems) == 1
    assert "'fra_xyz' is not installed" in problems[0]
    assert "apt-get install tesseract-ocr-fra-xyz" in problems[0]
    assert TextReader(("eng",)).problems() == []


def test_a_damaged_image_is_a_recorded_failure_not_an_exception() -> None:
    require_tesseract("eng")
    whole = textimages.english()
    for data in (b"", b"\xff\xd8\xff\xe0 not a jpeg", b"%PDF-1.4"):
        result = TextReader(("eng",)).read(io.BytesIO(data))
        assert result.outcome == "failed"
        assert result.text is None
        assert result.detail and result.detail.startswith("image:")
    # A truncated JPEG still decodes its top part (Pillow fills the rest), or fails cleanly.
    result = TextReader(("eng",)).read(io.BytesIO(whole[: len(whole) // 3]))
    assert result.outcome in ("done", "failed")


def test_tesseract_over_its_time_limit_is_killed() -> None:
    require_tesseract("eng")
    page = textimages.big_page(3000, 2000)
    buf = io.BytesIO()
    page.save(buf, "PNG")
    me = psutil.Process()
    started = time.monotonic()
    result = TextReader(("eng",), timeout=0.3).read(io.BytesIO(buf.getvalue()))
    elapsed = time.monotonic() - started
    assert result.outcome == "timeout"
    assert result.text is None
    # pytesseract terminates, waits a second at most, then kills.
    assert elapsed < 0.3 + 1.5 + 1.0
    assert not [p for p in me.children(recursive=True) if "tesseract" in p.name()]


_PEAK_SCRIPT = """
import sys
from PIL import Image
from receiver.media.transform import upright_grey
def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1])
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here
with open(sys.argv[1], "rb") as fp:
    if sys.argv[2] == "reduced":
        upright_grey(fp, max_pixels_out=int(sys.argv[3]))
    else:
        Image.open(fp).convert("RGB").load()
print(status("VmHWM") - before)
"""


def peak_growth_kb(path: Path, *, reduced: bool) -> int:
    """How far the peak RSS of a new process rises while it decodes `path` (Linux)."""
    mode = "reduced" if reduced else "full"
    args = [sys.executable, "-c", _PEAK_SCRIPT, str(path), mode, str(ocr.OCR_MAX_PIXELS)]
    return int(subprocess.run(args, capture_output=True, check=True, text=True).stdout)


def test_a_50_megapixel_image_is_read_and_hashed_in_bounded_time(tmp_path: Path) -> None:
    require_tesseract("eng")
    page = textimages.big_page()
    assert 49_900_000 < page.width * page.height <= 50_000_000
    path = tmp_path / "big.jpg"
    page.save(path, "JPEG", quality=85)
    png = tmp_path / "big.png"
    page.save(png, "PNG", compress_level=1)
    del page

    for source in (path, png):
        with source.open("rb") as fp:
            grey = upright_grey(fp, max_pixels_out=ocr.OCR_MAX_PIXELS)
        # Reduced before OCR: never more than the cap, whatever the source size.
        assert grey.width * grey.height <= ocr.OCR_MAX_PIXELS
        assert grey.mode == "L"

    # Memory, measured in a fresh process from the moment before decoding: the JPEG is
    # decoded at half size in greyscale, against a plain full decode of the same file.
    reduced_kb = peak_growth_kb(path, reduced=True)
    full_kb = peak_growth_kb(path, reduced=False)
    assert reduced_kb < 100_000, f"{reduced_kb} kB"
    assert reduced_kb * 3 < full_kb, (reduced_kb, full_kb)

    started = time.monotonic()
    with path.open("rb") as fp:
        result = TextReader(("eng",), timeout=60).read(fp)
    assert result.outcome == "done", result.detail
    assert "Invoice 4711" in (result.text or "")
    assert time.monotonic() - started < 60

    started = time.monotonic()
    with path.open("rb") as fp:
        thumb = make_thumbnail(fp)
    assert thumb.phash is not None
    # JPEG decodes at 1/8 scale for the thumbnail: far below a second even on a loaded machine.
    assert time.monotonic() - started < 10


def test_upright_grey_turns_by_exif_and_flattens_transparency() -> None:
    im = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    buf.seek(0)
    assert upright_grey(buf, max_pixels_out=10_000).size == (20, 40)
    clear = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    clear.putpixel((5, 5), (0, 0, 0, 255))
    buf = io.BytesIO()
    clear.save(buf, "PNG")
    buf.seek(0)
    grey = upright_grey(buf, max_pixels_out=10_000)
    assert grey.getpixel((0, 0)) == 255  # transparent becomes white paper
    assert grey.getpixel((5, 5)) == 0  # the ink stays black


def test_only_confident_words_are_kept_line_by_line() -> None:
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [
        "5\t1\t1\t1\t1\t1\t0\t0\t9\t9\t96.0\tInvoice",
        "5\t1\t1\t1\t1\t2\t0\t0\t9\t9\t91.5\t4711",
        "4\t1\t1\t1\t2\t0\t0\t0\t9\t9\t-1\t",
        "5\t1\t1\t1\t2\t1\t0\t0\t9\t9\t47.9\toa",
        "5\t1\t2\t1\t1\t1\t0\t0\t9\t9\t88.0\tDanke",
        "5\t1\t2\t1\t1\t2\t0\t0\t9\t9\tbad\tx",
    ]
    assert ocr.confident_lines("\n".join([header, *rows])) == "Invoice 4711\nDanke"
    assert ocr.confident_lines(header) == ""


def test_a_photo_without_text_reads_as_empty() -> None:
    require_tesseract("eng")
    from tests.support import samples

    result = TextReader(("eng",)).read(io.BytesIO(samples.jpeg()))
    assert result.outcome == "done"
    assert result.text == ""
