"""Benchmark: text in images (OCR) and the perceptual hash per 12 MP photo, against a
plain Pillow decode of the same photo in the same run.

Run: python tests/benchmarks/bench_ocr.py [--runs N] [--ocr-runs N]

The photo is 4000x3000 (12 MP), a phone-like JPEG (quality 90) of a noisy scene
with a receipt of ten printed lines in it. Prints p50/p99 milliseconds of:

* BASELINE decode     - Image.open + load(): the full 12 MP decode;
* reduced grey        - what OCR reads: DCT-scaled decode, upright, greyscale, <= 8 MP;
* OCR eng             - the service's whole step: reduced grey + one tesseract process;
* OCR eng+deu+jpn     - the same with three languages;
* thumbnail + phash   - the hash on arrival: made with the thumbnail;
* phash standalone    - `perceptual_hash` (backfill, on demand): the same 1/8 DCT-scaled
                        frame and its 64-bit dHash, no thumbnail encoded; target < 30 ms.

A second table does the decode and both hashes for a heavier 12 MP camera JPEG
(quality 95, no chroma subsampling, about 8 MB). Besides wall-clock p50/p99,
each row shows the p50 CPU time of the timing thread, which a loaded machine
inflates less.

Needs tesseract with the eng, deu and jpn languages (Debian tesseract-ocr,
tesseract-ocr-deu, tesseract-ocr-jpn) and the DejaVu font.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from receiver.media.ocr import OCR_MAX_PIXELS, TextReader  # noqa: E402
from receiver.media.transform import (  # noqa: E402
    make_thumbnail,
    perceptual_hash,
    upright_grey,
)
from tests.support import samples  # noqa: E402

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
RECEIPT = [
    "CORNER GROCERY  #0042",
    "2024-05-01 12:34",
    "Milk 1L            1.29",
    "Bread              2.49",
    "Apples 1kg         3.10",
    "Coffee beans       8.99",
    "Subtotal          15.87",
    "Tax                1.27",
    "TOTAL             17.14",
    "Thank you for shopping",
]


def photo_with_receipt() -> bytes:
    """A 12 MP JPEG: a noisy photo with a receipt (black text on white) in its middle."""
    im = samples.photo(4000, 3000, seed=5)
    draw = ImageDraw.Draw(im)
    draw.rectangle((1200, 600, 2800, 2400), fill="white")
    font = ImageFont.truetype(FONT, 64)
    for i, line in enumerate(RECEIPT):
        draw.text((1280, 680 + i * 160), line, fill="black", font=font)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def timings(fn: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and thread-CPU milliseconds of `runs` calls after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.thread_time()
        fn()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    return wall, cpu


Rows = list[tuple[str, tuple[list[float], list[float]]]]


def print_table(rows: Rows) -> None:
    """The rows against the first one (the baseline of the same run)."""
    base = pct(rows[0][1][0], 0.5)
    print(f"{'step':40} {'p50 ms':>9} {'p99 ms':>9} {'CPU p50':>9} {'x decode':>9}")
    for label, (wall, cpu) in rows:
        p50 = pct(wall, 0.5)
        print(
            f"{label:40} {p50:9.1f} {pct(wall, 0.99):9.1f} {pct(cpu, 0.5):9.1f} {p50 / base:9.2f}"
        )


def hash_rows(data: bytes, runs: int, what: str) -> Rows:
    """The full decode of `data`, and the hash on arrival and alone."""

    def decode() -> None:
        with Image.open(io.BytesIO(data)) as im:
            im.load()

    return [
        (f"BASELINE Pillow full decode{what}", timings(decode, runs)),
        ("thumbnail + phash (on arrival)", timings(lambda: make_thumbnail(io.BytesIO(data)), runs)),
        (
            "phash standalone (perceptual_hash)",
            timings(lambda: perceptual_hash(io.BytesIO(data)), runs),
        ),
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of the decode and hash steps")
    parser.add_argument("--ocr-runs", type=int, default=5, help="runs of each OCR step")
    args = parser.parse_args(argv)

    data = photo_with_receipt()
    eng = TextReader(("eng",), timeout=120)
    three = TextReader(("eng", "deu", "jpn"), timeout=120)
    for reader in (eng, three):
        if reader.problems():
            print("; ".join(reader.problems()), file=sys.stderr)
            return 2
    read = eng.read(io.BytesIO(data))
    found = sum(line.split()[0] in (read.text or "") for line in RECEIPT)

    def reduced() -> None:
        upright_grey(io.BytesIO(data), max_pixels_out=OCR_MAX_PIXELS)

    receipt_rows = hash_rows(data, args.runs, "")
    rows = [
        receipt_rows[0],
        ("reduced grey for OCR (<= 8 MP)", timings(reduced, args.runs)),
        ("OCR eng (the service)", timings(lambda: eng.read(io.BytesIO(data)), args.ocr_runs)),
        ("OCR eng+deu+jpn", timings(lambda: three.read(io.BytesIO(data)), args.ocr_runs)),
        *receipt_rows[1:],
    ]
    camera = samples.camera_jpeg_12mp()
    camera_rows = hash_rows(camera, args.runs, " (camera)")
    load = os.getloadavg()
    print(f"# {platform.python_version()}, {os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f}")
    print(f"# tesseract {eng.version()}, 12 MP JPEG {len(data) / 1e6:.1f} MB; ")
    print(f"# OCR found {found} of {len(RECEIPT)} receipt lines")
    print_table(rows)
    print(f"# camera JPEG 4000x3000, quality 95, 4:4:4, {len(camera) / 1e6:.1f} MB")
    print_table(camera_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
