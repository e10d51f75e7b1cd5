"""Audio and video facts from ffprobe: container, codecs, duration, size, rotation, tracks.

libmagic reads a container's brand, not its tracks, so an audio-only 3GPP voice
memo looks like a video; ffprobe lists the streams. ffprobe is optional at run
time (`check` says when it is missing): without it, these facts are absent and
nothing else changes. It runs with a wall-clock limit, CPU and memory caps and
no stdin, and any failure (a damaged file, a hang) means "no facts", never an
error for the caller.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, BinaryIO

__all__ = ["AVFacts", "ffprobe_path", "ffprobe_version", "probe"]

log = logging.getLogger(__name__)

#: Wall-clock seconds, CPU seconds and address space (bytes) one ffprobe may use.
TIMEOUT = 10.0
CPU_SECONDS = 10
MEMORY_BYTES = 512 * 1024 * 1024
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class AVFacts:
    """What ffprobe says about a media file."""

    #: ffprobe's format names, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "amr".
    container: str
    #: Codec names of the audio and video streams, in stream order (e.g. ["h263", "amr_nb"]).
    codecs: tuple[str, ...]
    duration_seconds: float | None
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    #: Display rotation in degrees (0, 90, 180, 270) from the stream's side data or tags.
    rotation: int | None = None


def ffprobe_path() -> str | None:
    """ffprobe on PATH (Debian's `ffmpeg` package), or None."""
    return shutil.which("ffprobe")


def ffprobe_version() -> str | None:
    """The first line of `ffprobe -version`, or None when ffprobe is missing or broken."""
    path = ffprobe_path()
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "-version"],
            capture_output=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.decode("utf-8", errors="replace").splitlines()
    return first[0].strip() if out.returncode == 0 and first else None


def _limits() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def probe(fp: BinaryIO, *, timeout: float = TIMEOUT) -> AVFacts | None:
    """ffprobe's facts about the file in `fp` (read from its start, left at 0), or None.

    The bytes are copied to a temporary file first: MP4s with the index (moov)
    at the end need seeking, which a pipe cannot do.
    """
    path = ffprobe_path()
    if path is None:
        return None
    try:
        with tempfile.NamedTemporaryFile(prefix="probe-", suffix=".bin") as tmp:
            fp.seek(0)
            while chunk := fp.read(_COPY_CHUNK):
                tmp.write(chunk)
            tmp.flush()
            out = subprocess.run(
                [
                    path,
                    "-v",
                    "error",
                    "-print_format",
                    "json",
                    "-show_format",
                    "-show_streams",
                    tmp.name,
                ],
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                preexec_fn=_limits,
                check=False,
            )
    except subprocess.TimeoutExpired:
        log.warning("ffprobe took over %.0f s; no audio/video facts", timeout)
        return None
    except OSError as exc:
        log.warning("ffprobe could not run: %s", exc)
        return None
    finally:
        fp.seek(0)
    if out.returncode != 0:
        return None
    try:
        return _facts(json.loads(out.stdout or b"{}"))
    except (ValueError, TypeError, KeyError):
        return None


def _facts(data: dict[str, Any]) -> AVFacts | None:
    fmt = data.get("format") or {}
    streams = [s for s in data.get("streams") or [] if isinstance(s, dict)]
    media = [s for s in streams if s.get("codec_type") in ("audio", "video")]
    # Cover art in an audio file is a "video" stream of one still picture.
    video = [
        s
        for s in media
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audio = [s for s in media if s.get("codec_type") == "audio"]
    if not fmt.get("format_name") or not (video or audio):
        return None
    first = video[0] if video else {}
    return AVFacts(
        container=str(fmt["format_name"]),
        codecs=tuple(str(s.get("codec_name") or "unknown") for s in video + audio),
        duration_seconds=_number(fmt.get("duration")),
        has_video=bool(video),
        has_audio=bool(audio),
        width=_positive(first.get("width")),
        height=_positive(first.get("height")),
        rotation=_rotation(first) if video else None,
    )


def _number(value: Any) -> float | None:
    try:
        number = round(float(value), 3)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list") or []:
        if isinstance(side, dict) and "rotation" in side:
            return int(-float(side["rotation"])) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    try:
        return int(tag) % 360 if tag is not None else 0
    except ValueError:
        return 0
