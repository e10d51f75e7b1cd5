"""Benchmark: inspect and thumbnail a 12-megapixel JPEG, against a full decode in the same run.

Run: python tests/benchmarks/bench_media.py [--runs N]

Two 12-megapixel (4000x3000) JPEGs are generated: a phone-like photo (quality
90, 4:2:0, about 2.5 MB) and a heavy one (quality 95, 4:4:4, about 8 MB, noisy).
For each it prints p50/p99 milliseconds of:

* inspect()         - libmagic + header-only Pillow probe + end-marker check;
* baseline decode   - Image.open + load(): what a naive "is it an image?" check costs;
* make_thumbnail()  - DCT-scaled decode (draft), 320 px JPEG, orientation, no EXIF;
* baseline thumb    - full decode, then Image.thumbnail without draft, same output.

Targets (issue 3): inspect under 20 ms, thumbnail under 150 ms.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PIL import Image, ImageOps  # noqa: E402

from receiver.media.inspect import inspect  # noqa: E402
from receiver.media.transform import make_thumbnail  # noqa: E402
from tests.support import samples  # noqa: E402


def timings(fn: Callable[[], object], runs: int) -> list[float]:
    """Milliseconds of `runs` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def baseline_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as im:
        im.load()


def baseline_thumbnail(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # full decode first: draft() can no longer apply
        upright = ImageOps.exif_transpose(im) or im
        upright = upright.convert("RGB")
        upright.thumbnail((320, 320), Image.Resampling.BICUBIC, reducing_gap=None)
        buf = io.BytesIO()
        upright.save(buf, "JPEG", quality=80)
        return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs of our code (default 30)")
    parser.add_argument(
        "--baseline-runs", type=int, default=8, help="timed runs of each baseline (default 8)"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    images = {
        "phone q90 4:2:0": samples.encode(
            samples.photo(4000, 3000, noise=10, seed=7),
            "JPEG",
            quality=90,
            subsampling=2,
            exif=samples.exif_block(orientation=6, gps=True),
        ),
        "heavy q95 4:4:4": samples.camera_jpeg_12mp(),
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bench_media: Python {platform.python_version()}, Pillow {Image.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f}"
    )
    print(f"runs: ours {args.runs}, baselines {args.baseline_runs} (after one warm-up each)\n")
    header = f"{'image':<18} {'size':>8} {'operation':<28} {'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for name, data in images.items():
        info = inspect(io.BytesIO(data), "image/jpeg")
        assert info.problem is None and (info.width, info.height) == (4000, 3000), info
        thumb = make_thumbnail(io.BytesIO(data))

        def run_inspect(d: bytes = data) -> object:
            return inspect(io.BytesIO(d), "image/jpeg")

        def run_thumbnail(d: bytes = data) -> object:
            return make_thumbnail(io.BytesIO(d))

        rows = [
            ("inspect()", timings(run_inspect, args.runs)),
            (
                "baseline: open + load()",
                timings(partial(baseline_decode, data), args.baseline_runs),
            ),
            (f"make_thumbnail() {thumb.width}x{thumb.height}", timings(run_thumbnail, args.runs)),
            (
                "baseline: thumb, no draft",
                timings(partial(baseline_thumbnail, data), args.baseline_runs),
            ),
        ]
        for label, values in rows:
            print(
                f"{name:<18} {len(data) / 1e6:>6.1f}MB {label:<28} "
                f"{pct(values, 0.5):>8.1f} {pct(values, 0.99):>8.1f}"
            )
        inspect_p50 = pct(rows[0][1], 0.5)
        decode_p50 = pct(rows[1][1], 0.5)
        thumb_p50 = pct(rows[2][1], 0.5)
        base_thumb_p50 = pct(rows[3][1], 0.5)
        print(
            f"{'':<18} {'':>8} speed-up: inspect {decode_p50 / inspect_p50:.0f}x vs decode, "
            f"thumbnail {base_thumb_p50 / thumb_p50:.1f}x vs no-draft\n"
        )
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
