"""Benchmark: fit a 12-megapixel ~8 MB JPEG into 5 MB and 600 KB, against a resize loop.

Run: python tests/benchmarks/bench_fit.py [--runs N]

Input: a 4000x3000 noisy photo saved at quality 95, 4:4:4, with EXIF and GPS
(about 8 MB, generated once into a temporary file).

* ours      - receiver.media.transform.fit(): size predicted from the source's
              bytes per pixel and quality, calibrated on a sampled quarter of
              the rows, DCT-scaled decode, then (normally) one encode.
* baseline  - the usual loop: decode in full, then encode at quality 85 and, while
              it is over budget, shrink by 10 % and encode again.

Each scenario runs in its own child process so peak RSS (VmHWM) is its own;
"peak RSS +" is the growth over the process's RSS after reading the input.
Target (issue 4): one encode pass in the common case, under 400 ms.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageOps  # noqa: E402

BUDGETS = (5_000_000, 600_000)
QUALITY = 85


def status_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KB (Linux).

    VmHWM (peak RSS) is used rather than ru_maxrss: after fork and exec, Linux
    reports the parent's peak in ru_maxrss, which would hide the child's own.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def baseline_fit(data: bytes, budget: int) -> tuple[bytes, int, tuple[int, int]]:
    """Decode fully, then encode; shrink 10 % and encode again until it fits."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        full = (ImageOps.exif_transpose(im) or im).convert("RGB")
    scale = 1.0
    passes = 0
    while True:
        passes += 1
        size = (round(full.width * scale), round(full.height * scale))
        frame = full if scale == 1.0 else full.resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        frame.save(buf, "JPEG", quality=QUALITY)
        if buf.tell() <= budget or passes >= 40:
            return buf.getvalue(), passes, size
        scale *= 0.9


def child(path: str, which: str, budget: int, runs: int) -> None:
    """Run one scenario `runs` times and print a JSON line with its figures."""
    from receiver.media.inspect import inspect
    from receiver.media.transform import fit

    data = Path(path).read_bytes()
    info = inspect(io.BytesIO(data), "image/jpeg")
    before = status_kb("VmRSS")
    times = []
    result: dict[str, object] = {}
    for _ in range(runs):
        started = time.perf_counter()
        if which == "ours":
            fitted = fit(io.BytesIO(data), info, budget_bytes=budget)
            out = fitted.derived
            result = {
                "bytes": len(out.data),
                "passes": fitted.encode_passes,
                "estimates": fitted.estimates,
                "predicted": fitted.predicted_bytes,
                "quality": fitted.quality,
                "size": f"{out.width}x{out.height}",
            }
        else:
            encoded, passes, size = baseline_fit(data, budget)
            result = {
                "bytes": len(encoded),
                "passes": passes,
                "estimates": 0,
                "predicted": None,
                "quality": QUALITY,
                "size": f"{size[0]}x{size[1]}",
            }
        times.append((time.perf_counter() - started) * 1000)
    peak = status_kb("VmHWM")
    result.update(
        {
            "p50": statistics.median(times),
            "min": min(times),
            "max": max(times),
            "rss_growth_mb": max(peak - before, 0) / 1024,
        }
    )
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    parser.add_argument(
        "--child", nargs=3, metavar=("PATH", "WHICH", "BUDGET"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.runs)
        return

    from tests.support import samples

    started = time.perf_counter()
    data = samples.camera_jpeg_12mp()
    load = os.getloadavg()[0]
    print(
        f"bench_fit: Python {platform.python_version()}, Pillow {Image.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f}"
    )
    print(
        f"input: 4000x3000 JPEG q95 4:4:4 + EXIF/GPS, {len(data):,} bytes; {args.runs} runs each\n"
    )
    header = (
        f"{'budget':>9} {'method':<9} {'p50 ms':>7} {'min ms':>7} {'passes':>6} {'est.':>4} "
        f"{'output':>9} {'fill':>5} {'dims':>9} {'q':>3} {'peak RSS +':>10}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "camera.jpg"
        path.write_bytes(data)
        for budget in BUDGETS:
            for which in ("ours", "baseline"):
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--runs",
                        str(args.runs),
                        "--child",
                        str(path),
                        which,
                        str(budget),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(
                    f"{budget:>9,} {which:<9} {r['p50']:>7.0f} {r['min']:>7.0f} {r['passes']:>6} "
                    f"{r['estimates']:>4} {r['bytes']:>9,} {r['bytes'] / budget:>5.2f} "
                    f"{r['size']:>9} {r['quality'] or '-':>3} {r['rss_growth_mb']:>8.1f}MB"
                )
    print(
        "\npasses: full encodes of the output; est.: sampled estimates (a quarter-size "
        "encode each);\nfill: output / budget. "
        f"total {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
