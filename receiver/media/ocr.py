"""Text in images: Tesseract (Debian's `tesseract-ocr`) run through pytesseract.

Each image is decoded reduced and upright (`transform.upright_grey`, at most
OCR_MAX_PIXELS), written to a private temporary directory, and read by one
`tesseract` process with a wall-clock limit; a process that runs over is
killed. Why a process and not the library in this one: docs/design.md
("Text in images").
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "OCR_MAX_PIXELS",
    "OcrResult",
    "TextReader",
    "confident_lines",
    "debian_package",
    "parse_languages",
    "tidy",
]

#: Images are read at most this big: a 12 MP photo's text stays legible at 8 MP,
#: and a 50 MP one costs no more than that.
OCR_MAX_PIXELS = 8_000_000
#: Words tesseract is less sure of (0-100) are left out.
MIN_CONFIDENCE = 60.0
#: Text kept per image (a page of small print is about 5,000 characters).
MAX_TEXT_CHARS = 20_000
_LANGUAGE = re.compile(r"[a-z]{3}(?:_[a-z]{2,8})?")
# Tesseract separates CJK characters with spaces; a search for a word must find it whole.
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(f"(?<=[{_CJK}]) +(?=[{_CJK}])")


def parse_languages(raw: str) -> tuple[str, ...]:
    """`RECEIVER_OCR` as Tesseract language names: "" or "off" is none; "eng+deu+jpn"
    is three. Raises ValueError naming the bad part."""
    value = raw.strip().lower()
    if value in ("", "off", "0", "false", "no"):
        return ()
    names = tuple(part.strip() for part in value.replace(",", "+").split("+"))
    for name in names:
        if not _LANGUAGE.fullmatch(name):
            raise ValueError(
                f"RECEIVER_OCR: {name!r} is not a Tesseract language name; use names such as "
                "eng, deu, jpn or chi_sim joined with +, e.g. RECEIVER_OCR=eng+deu"
            )
    return tuple(dict.fromkeys(names))


def debian_package(language: str) -> str:
    """The Debian package that installs a Tesseract language (chi_sim: tesseract-ocr-chi-sim)."""
    return "tesseract-ocr-" + language.replace("_", "-")


def confident_lines(tsv: str, *, min_confidence: float = MIN_CONFIDENCE) -> str:
    """The lines of tesseract's TSV output, of the words it is confident about.

    Without the cut a photo of a street or a face reads as a few stray letters,
    which would then match searches.
    """
    lines: dict[tuple[str, ...], list[str]] = {}
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12 or not cells[11].strip():
            continue
        try:
            confidence = float(cells[10])
        except ValueError:
            continue
        if confidence >= min_confidence:
            # page, block, paragraph, line
            lines.setdefault(tuple(cells[1:5]), []).append(cells[11])
    return "\n".join(" ".join(words) for words in lines.values())


def tidy(text: str) -> str:
    """Recognised text with runs of blanks and empty lines removed, CJK words joined."""
    lines = (_CJK_GAP.sub("", " ".join(line.split())) for line in text.splitlines())
    return "\n".join(line for line in lines if line)[:MAX_TEXT_CHARS]


@dataclass(frozen=True)
class OcrResult:
    """What reading one image gave.

    `outcome` is "done" (`text` may be empty: no text found), "timeout" (over
    the wall-clock limit) or "failed" (the image or tesseract failed; see `detail`).
    """

    outcome: str
    text: str | None
    languages: str
    seconds: float
    detail: str | None = None


class TextReader:
    """Reads the text of images in the configured languages, each within `timeout` seconds."""

    def __init__(
        self,
        languages: Sequence[str],
        *,
        timeout: float = 30.0,
        max_pixels: int = OCR_MAX_PIXELS,
    ) -> None:
        if not languages:
            raise ValueError("languages: at least one Tesseract language is needed")
        self.languages = tuple(languages)
        self.timeout = timeout
        self.max_pixels = max_pixels
        self._missing: list[str] | None = None
        # Tesseract's OpenMP build starts a thread per core for each page; this is
        # background work on a shared machine, so one core at a time is enough.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")

    @property
    def lang(self) -> str:
        """The languages as tesseract's -l argument."""
        return "+".join(self.languages)

    def problems(self) -> list[str]:
        """What stops OCR here (tesseract missing, a language not installed), each with the fix.

        Asked once and remembered: installing a package needs a restart anyway.
        """
        if self._missing is None:
            self._missing = self._check()
        return list(self._missing)

    def version(self) -> str | None:
        """tesseract's version, or None when it is not installed."""
        import pytesseract

        try:
            return str(pytesseract.get_tesseract_version())
        except (pytesseract.TesseractNotFoundError, OSError, SystemExit):
            return None

    def _check(self) -> list[str]:
        import pytesseract

        try:
            installed = set(pytesseract.get_languages())
        except (pytesseract.TesseractNotFoundError, OSError):
            return [
                "RECEIVER_OCR is set but tesseract is not installed; install the Debian "
                "package tesseract-ocr (apt-get install tesseract-ocr) or unset RECEIVER_OCR"
            ]
        except Exception as exc:  # pytesseract raises what `tesseract --list-langs` says
            return [f"tesseract --list-langs failed ({exc}); reinstall tesseract-ocr"]
        return [
            f"RECEIVER_OCR: Tesseract language {name!r} is not installed; install the Debian "
            f"package {debian_package(name)} (apt-get install {debian_package(name)}) "
            "or remove it from RECEIVER_OCR"
            for name in self.languages
            if name not in installed
        ]

    def read(self, fp: BinaryIO) -> OcrResult:
        """The text of the image in `fp`; never raises for a bad image or a stuck tesseract."""
        # Imported here: settings parse RECEIVER_OCR with this module in every process,
        # the `serve` master included, which must not carry Pillow (docs/design.md).
        import pytesseract

        from receiver.media.transform import upright_grey

        started = time.monotonic()

        def result(outcome: str, text: str | None, detail: str | None = None) -> OcrResult:
            return OcrResult(outcome, text, self.lang, time.monotonic() - started, detail)

        try:
            grey = upright_grey(fp, max_pixels_out=self.max_pixels)
        except Exception as exc:  # MediaError, or whatever a damaged file raises
            return result("failed", None, f"image: {exc}"[:500])
        # A private directory (0700): the picture and its text are the sender's.
        with tempfile.TemporaryDirectory(prefix="receiver-ocr-") as tmp:
            source = Path(tmp) / "page.pgm"
            grey.save(source, "PPM")  # uncompressed: writing it costs nothing next to OCR
            out = Path(tmp) / "text"
            remaining = self.timeout - (time.monotonic() - started)
            if remaining <= 0:
                return result("timeout", None, f"over {self.timeout:g} s before tesseract ran")
            try:
                # The module-level runner, not image_to_string: that one writes the
                # picture and its text to the shared temporary directory.
                pytesseract.pytesseract.run_tesseract(
                    str(source),
                    str(out),
                    extension="tsv",
                    lang=self.lang,
                    config="-c tessedit_create_tsv=1",
                    timeout=remaining,
                )
            except RuntimeError as exc:
                if "timeout" in str(exc).lower():
                    return result("timeout", None, f"tesseract ran over {self.timeout:g} s")
                return result("failed", None, f"tesseract: {exc}"[:500])
            except (pytesseract.TesseractError, pytesseract.TesseractNotFoundError) as exc:
                return result("failed", None, f"tesseract: {exc}"[:500])
            with contextlib.suppress(FileNotFoundError):
                words = out.with_suffix(".tsv").read_text("utf-8", "replace")
                return result("done", tidy(confident_lines(words)))
        return result("failed", None, "tesseract wrote no text file")
