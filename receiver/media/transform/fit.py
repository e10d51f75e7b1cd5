"""Fitting an image into a byte budget (MMS and WhatsApp limits), and animations to MP4.

`fit_for_mms` predicts the encoded size instead of searching for it:

1. A bytes-per-pixel model gives the size at full resolution for the output
   quality: for a JPEG source, its own bytes per pixel rescaled by a
   quality curve (the source quality is read from its quantisation tables)
   and its chroma subsampling; for other sources, a photo prior.
2. Bytes scale with pixel count to the power alpha (0.9 by default; noisy
   images shrink faster, detailed ones slower), which gives the scale.
3. The JPEG is decoded with DCT scaling (``draft``) at the largest
   power-of-two reduction (1/2, 1/4, 1/8) that still covers that scale, so a
   12-megapixel photo is often never decoded at full size. Between 1/2 and
   5/8 the half-size decode is kept and quality makes up the difference: a
   full decode plus resize costs several times more.
4. The model is calibrated on a sample: every fourth 16-row band of the
   output is resized and encoded (about a quarter of the work, accurate to
   a few percent because JPEG codes blocks independently); scale or quality
   is corrected from that measurement. A JPEG the model puts far under the
   budget skips this step.
5. One full encode. If it still misses the budget, a corrective pass uses the
   measured size; the common case is a single encode.
"""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from receiver.errors import MediaError
from receiver.media.inspect import MediaInfo
from receiver.media.transform.raster import (
    DEFAULT_MAX_PIXELS,
    JPEG_QUALITY,
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
    scaled_size,
)
from receiver.media.transform.strip import keep_losslessly

__all__ = [
    "ANIMATION_TIMEOUT",
    "FitResult",
    "animation_to_mp4",
    "estimate_jpeg_quality",
    "fit",
    "fit_for_mms",
]

#: Bounds of the output quality (`JPEG_QUALITY`) when the budget needs a different one.
MIN_JPEG_QUALITY = 60
MAX_JPEG_QUALITY = 95
#: Aim this far under the budget: the sampled estimate is accurate to a few percent.
FILL = 0.93
#: The long side a fitted image may be reduced to before quality is lowered instead.
MIN_LONG_SIDE = 480
MAX_ENCODE_PASSES = 4
#: A JPEG predicted under this share of the target is encoded without sampling first.
SKIP_SAMPLE_BELOW = 0.6
MAX_ESTIMATES = 4
#: Total pixels across all frames an animation may expand to while it is re-encoded.
MAX_ANIMATION_PIXELS = 150_000_000
# Relative JPEG size by quality (libjpeg scaling, 4:2:0), normalised at 85; the
# middle of curves measured on photos and noisy synthetic images.
_QUALITY_CURVE = (
    (10, 0.17),
    (30, 0.33),
    (50, 0.45),
    (60, 0.52),
    (70, 0.62),
    (75, 0.70),
    (80, 0.82),
    (85, 1.00),
    (90, 1.33),
    (92, 1.55),
    (95, 2.10),
    (98, 3.30),
    (100, 5.00),
)
#: A 4:4:4 JPEG against a 4:2:0 one of the same quality.
_FULL_CHROMA_FACTOR = 1.45
#: Bytes per pixel of a 4:2:0 photo at quality 85 when the source says nothing.
_PRIOR_BYTES_PER_PIXEL = 0.28
_ALPHA = 0.9
_BAND = 16
_BAND_STEP = 4
_IJG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


@dataclass(frozen=True)
class FitResult:
    """What `fit()` made and how: for logs, metrics and the benchmark."""

    derived: Derived
    #: Full encodes of the output (0 when the original was kept, stripped losslessly).
    encode_passes: int
    #: Sampled estimates (a quarter of an encode each) used to calibrate the prediction.
    estimates: int
    #: Size the model predicted before calibration (None when nothing was predicted).
    predicted_bytes: int | None
    quality: int | None
    #: Linear scale of the output against the (orientation-corrected) original.
    scale: float


def fit_for_mms(fp: BinaryIO, info: MediaInfo, *, budget_bytes: int) -> Derived:
    """Make an image MMS can carry within `budget_bytes`, without EXIF/GPS.

    HEIC/HEIF, WebP, BMP, TIFF and AVIF become JPEG (PNG when transparent);
    JPEG/PNG over the budget are resized and recompressed; an animated GIF over
    the budget is shrunk keeping every frame, duration and its loop count.
    Files already within the budget are kept as they are, with metadata
    removed losslessly. Raises MediaError(reason="too_large") when the image
    cannot fit, and MediaError with the inspection's problem for bad files.
    """
    return fit(fp, info, budget_bytes=budget_bytes).derived


def fit(
    fp: BinaryIO, info: MediaInfo, *, budget_bytes: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> FitResult:
    """`fit_for_mms` with a report of how the result was made (passes, estimates, scale)."""
    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes: must be positive, got {budget_bytes}")
    require_raster(info)
    mime = info.detected_type
    rotated = (info.orientation or 1) != 1

    if info.size_bytes <= budget_bytes and not rotated:
        kept = keep_losslessly(fp, info)
        if kept is not None:
            return FitResult(kept, 0, 0, None, None, 1.0)

    with open_raster(fp, max_pixels) as im:
        if info.animated and mime in ("image/gif", "image/png", "image/webp"):
            return _fit_animation(im, info, budget_bytes)
        return _fit_still(im, info, budget_bytes)


@dataclass
class _Plan:
    """The size model for one still image: bytes at full resolution and how they scale."""

    full_bytes: float
    alpha: float = _ALPHA

    def bytes_at(self, scale: float) -> float:
        return self.full_bytes * scale ** (2 * self.alpha)

    def scale_for(self, target: float) -> float:
        return float((target / self.full_bytes) ** (1 / (2 * self.alpha)))


def _quality_factor(quality: int) -> float:
    """Relative JPEG size at `quality` (piecewise-linear in the curve table)."""
    q = min(max(quality, 1), 100)
    for (q0, f0), (q1, f1) in itertools.pairwise(_QUALITY_CURVE):
        if q0 <= q <= q1:
            return f0 + (f1 - f0) * (q - q0) / (q1 - q0)
    return _QUALITY_CURVE[0][1]


def _quality_for_factor(factor: float) -> int:
    """Inverse of _quality_factor: the quality whose relative size is `factor`."""
    for (q0, f0), (q1, f1) in itertools.pairwise(_QUALITY_CURVE):
        if f0 <= factor <= f1:
            return int(q0 + (q1 - q0) * (factor - f0) / (f1 - f0))
    return 100 if factor > _QUALITY_CURVE[-1][1] else _QUALITY_CURVE[0][0]


def estimate_jpeg_quality(im: Image.Image) -> int | None:
    """The libjpeg quality a JPEG was saved with, from its luminance quantisation table."""
    tables = getattr(im, "quantization", None)
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    ratio = 100.0 * sum(tables[0]) / sum(_IJG_LUMA)
    quality = (200.0 - ratio) / 2.0 if ratio <= 100 else 5000.0 / ratio
    return int(min(max(round(quality), 1), 100))


def _initial_plan(im: Image.Image, info: MediaInfo, quality: int) -> _Plan:
    """Predicted bytes at full resolution and `quality`, from the source's own bytes per pixel."""
    pixels = im.width * im.height
    if is_jpeg(im):
        source_quality = estimate_jpeg_quality(im) or JPEG_QUALITY
        source_factor = _quality_factor(source_quality)
        if jpeg_sampling(im) == 0:
            source_factor *= _FULL_CHROMA_FACTOR
        full = info.size_bytes * _quality_factor(quality) / source_factor
    else:
        # Lossless or foreign codecs say little about JPEG size: use a photo prior.
        full = pixels * _PRIOR_BYTES_PER_PIXEL * _quality_factor(quality)
    return _Plan(full_bytes=max(full, 1.0))


def _draft_reduction(im: Image.Image, scale: float) -> int:
    """The DCT reduction (1, 2, 4 or 8) to decode a JPEG with, for an output at `scale`.

    Decoding reduced is nearly free next to decoding and resizing a full image,
    so the largest reduction that still covers `scale` is used; between 1/2 and
    5/8 the half-size decode is taken and quality makes up the difference,
    because a full decode plus resize costs several times more.
    """
    if not is_jpeg(im):
        return 1
    for k in (8, 4, 2):
        if scale <= 1 / k or (k == 2 and scale <= 0.625):
            return k
    return 1


class _Sampler:
    """Encoded-size estimates of `base` resized by a scale, from every fourth band of rows."""

    def __init__(self, base: Image.Image, fmt: str, icc: bytes | None) -> None:
        self.base = base
        self.fmt = fmt
        self.icc = icc
        self.count = 0
        self._overhead: dict[int, int] = {}

    def _header(self, quality: int) -> int:
        if quality not in self._overhead:
            tiny = Image.new(self.base.mode, (16, 16))
            self._overhead[quality] = len(
                encode_image(tiny, self.fmt, quality=quality, icc=self.icc)
            )
        return self._overhead[quality]

    def estimate(self, scale: float, quality: int) -> float:
        self.count += 1
        width, height = scaled_size(self.base.size, scale)
        rows = list(range(0, max(height - _BAND + 1, 1), _BAND * _BAND_STEP))
        if height <= _BAND * _BAND_STEP * 2:
            return float(len(self.encode(self.resize(scale), quality)))
        sample = Image.new(self.base.mode, (width, _BAND * len(rows)))
        sy = self.base.height / height
        for i, y in enumerate(rows):
            if (width, height) == self.base.size:
                band = self.base.crop((0, y, width, y + _BAND))
            else:
                # Resizing just this band (the box) gives the rows the full resize would.
                box = (0.0, y * sy, float(self.base.width), (y + _BAND) * sy)
                band = self.base.resize((width, _BAND), Image.Resampling.BICUBIC, box=box)
            sample.paste(band, (0, i * _BAND))
        header = self._header(quality)
        body = len(self.encode(sample, quality)) - header
        return header + body * height / sample.height

    def resize(self, scale: float) -> Image.Image:
        size = scaled_size(self.base.size, scale)
        if size == self.base.size:
            return self.base
        return self.base.resize(size, Image.Resampling.BICUBIC)

    def encode(self, im: Image.Image, quality: int) -> bytes:
        return encode_image(im, self.fmt, quality=quality, icc=self.icc)


def _fit_still(im: Image.Image, info: MediaInfo, budget: int) -> FitResult:
    target = budget * FILL
    orientation = orientation_of(im)
    source_quality = estimate_jpeg_quality(im) if is_jpeg(im) else None
    quality = min(JPEG_QUALITY, source_quality or JPEG_QUALITY)
    plan = _initial_plan(im, info, quality)
    predicted = plan.bytes_at(1.0)
    wanted = min(1.0, plan.scale_for(target))

    full_size = im.size
    reduction = _draft_reduction(im, wanted)
    if reduction > 1:
        im.draft("RGB", (im.width // reduction, im.height // reduction))
    load_pixels(im)
    icc = im.info.get("icc_profile")
    upright = apply_orientation(im, orientation)
    base, fmt = output_image(upright)
    # Scales below are relative to the decoded image; report them against the original.
    decoded = base.width / (full_size[1] if orientation >= 5 else full_size[0])
    sampler = _Sampler(base, fmt, icc)
    min_scale = min(1.0, MIN_LONG_SIDE / max(base.size))

    if fmt == "PNG":
        # Transparent images stay PNG; deflate sizes scale about with pixel count.
        plan = _Plan(full_bytes=sampler.estimate(1.0, quality), alpha=1.0)
        scale = min(1.0, plan.scale_for(target))
    elif decoded >= 1.0 and is_jpeg(im) and predicted <= SKIP_SAMPLE_BELOW * target:
        # The source's own bytes put the full-size result far under the budget;
        # the encode itself is the check (a corrective pass follows if it is not).
        scale = 1.0
    else:
        scale = min(1.0, wanted / decoded)
        ceiling = quality if decoded >= 1.0 else min(MAX_JPEG_QUALITY, source_quality or 100)
        scale, quality = _calibrate(
            sampler, plan, scale, quality, target, min_scale=min_scale, max_quality=ceiling
        )

    passes = 0
    while True:
        passes += 1
        out = sampler.resize(scale)
        data = sampler.encode(out, quality)
        if len(data) <= budget:
            return FitResult(
                as_derived(data, fmt, out.size),
                passes,
                sampler.count,
                round(predicted),
                quality if fmt == "JPEG" else None,
                round(scale * decoded, 4),
            )
        if passes >= MAX_ENCODE_PASSES:
            break
        # Corrective pass from the measured size, a little more conservative.
        factor = (target / len(data)) ** (1 / (2 * plan.alpha)) * 0.97
        if scale * factor < min_scale and fmt == "JPEG" and quality > MIN_JPEG_QUALITY:
            scale = max(min_scale, scale * factor)
            quality = max(MIN_JPEG_QUALITY, quality - 10)
        else:
            scale *= factor
        if min(scaled_size(base.size, scale)) < 16:
            break
    raise MediaError(
        f"the image cannot be made smaller than {len(data):,} bytes; budget is {budget:,}",
        "too_large",
    )


def _calibrate(
    sampler: _Sampler,
    plan: _Plan,
    scale: float,
    quality: int,
    target: float,
    *,
    min_scale: float,
    max_quality: int,
) -> tuple[float, int]:
    """Correct the predicted scale (or quality) with sampled estimates; returns (scale, quality).

    Scales are relative to the decoded image. Quality goes up only when the
    decoded image is already smaller than wanted (a DCT-scaled decode) and no
    higher than `max_quality`; it goes down only when the scale would drop
    below `min_scale`.
    """
    points: list[tuple[float, float]] = []
    base_quality = quality
    for _ in range(MAX_ESTIMATES):
        estimate = sampler.estimate(scale, quality)
        if 0.85 * target <= estimate <= target:
            break
        if scale >= 1.0 and (estimate < target or quality > base_quality):
            # Resolution is at its decoded maximum: quality is the lever, but it
            # never drops below where it started (resolution goes first then).
            wanted = _requality(quality, target / estimate, ceiling=max_quality)
            wanted = max(wanted, base_quality)
            if wanted == quality:
                break
            quality = wanted
            points.clear()
            continue
        points.append((scale, estimate))
        if len(points) >= 2:
            (s0, e0), (s1, e1) = points[-2:]
            if s0 != s1 and e0 != e1:
                plan.alpha = min(max(math.log(e1 / e0) / math.log(s1 / s0) / 2, 0.4), 2.0)
        new_scale = min(1.0, scale * (target / estimate) ** (1 / (2 * plan.alpha)))
        if new_scale < min_scale and quality > MIN_JPEG_QUALITY:
            # Do not shrink a photo into a stamp: lower the quality first.
            at_min = estimate * (min_scale / scale) ** (2 * plan.alpha)
            scale = min_scale
            quality = _requality(quality, target / at_min, ceiling=quality)
            points.clear()
            continue
        scale = new_scale
    return scale, quality


def _requality(quality: int, factor: float, *, ceiling: int) -> int:
    """The quality whose size is `factor` times that of `quality` (bounded by `ceiling`)."""
    wanted = _quality_for_factor(_quality_factor(quality) * factor)
    return max(min(wanted, ceiling), MIN_JPEG_QUALITY)


def _fit_animation(im: Image.Image, info: MediaInfo, budget: int) -> FitResult:
    """Shrink an animation (GIF, APNG, animated WebP) into a GIF within the budget."""
    frames = int(info.frames or getattr(im, "n_frames", 1) or 1)
    if frames * im.width * im.height > MAX_ANIMATION_PIXELS:
        raise MediaError(
            f"{frames} frames of {im.width}x{im.height} are too many pixels to re-encode",
            "decompression_bomb",
        )
    target = budget * FILL
    # LZW bytes grow about linearly with pixels; the source size is the anchor.
    plan = _Plan(full_bytes=float(info.size_bytes), alpha=1.0)
    predicted = plan.bytes_at(1.0)
    scale = min(1.0, plan.scale_for(target))
    points: list[tuple[float, int]] = []
    for passes in range(1, MAX_ENCODE_PASSES + 2):
        derived = encode_gif(im, scale)
        size = len(derived.data)
        if size <= budget:
            return FitResult(derived, passes, 0, round(predicted), None, round(scale, 4))
        points.append((scale, size))
        if len(points) >= 2:
            (s0, b0), (s1, b1) = points[-2], points[-1]
            if s0 != s1 and b0 != b1:
                plan.alpha = min(max(math.log(b1 / b0) / math.log(s1 / s0) / 2, 0.4), 2.0)
        scale *= (target / size) ** (1 / (2 * plan.alpha)) * 0.97
        if min(scaled_size(im.size, scale)) < 8:
            break
    raise MediaError(
        f"the animation cannot fit {budget:,} bytes without dropping frames", "too_large"
    )


#: How long ffmpeg may take to turn one animation into an MP4.
ANIMATION_TIMEOUT = 60.0


def animation_to_mp4(fp: BinaryIO, *, timeout: float = ANIMATION_TIMEOUT) -> bytes | None:
    """An animated GIF or PNG as a silent H.264 MP4 (yuv420p, even dimensions, index
    first), for channels that play video but not animations; None when ffmpeg is
    missing or cannot convert it (the caller then refuses the file with the fix)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    with tempfile.TemporaryDirectory(prefix="anim-") as tmp:
        source, target = Path(tmp) / "in", Path(tmp) / "out.mp4"
        fp.seek(0)
        source.write_bytes(fp.read())
        fp.seek(0)
        try:
            done = subprocess.run(
                [
                    ffmpeg,
                    "-v",
                    "error",
                    "-y",
                    "-i",
                    str(source),
                    "-vf",
                    "scale=trunc(iw/2)*2:trunc(ih/2)*2",
                    "-c:v",
                    "libx264",
                    "-pix_fmt",
                    "yuv420p",
                    "-movflags",
                    "faststart",
                    "-an",
                    str(target),
                ],
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0 or not target.is_file():
            return None
        return target.read_bytes()
