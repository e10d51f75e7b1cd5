"""Audio and video files made by a real ffmpeg (Debian's `ffmpeg`) from its test sources.

Phones' voice memos are AAC or AMR in a 3GPP container; Debian's ffmpeg has no
AMR encoder, so the memos here are AAC in 3GPP, which libmagic reads the same
way (the brand, not the tracks). Skips locally, fails under CI=true, when
ffmpeg is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.services import require


def ffmpeg(*args: str, fmt: str) -> bytes:
    """The output of `ffmpeg -nostdin <args> -f <fmt>` as bytes."""
    exe = shutil.which("ffmpeg")
    require(exe is not None, "ffmpeg is not installed (apt-get install ffmpeg)")
    assert exe is not None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        subprocess.run(
            [exe, "-nostdin", "-v", "error", "-y", *args, "-f", fmt, str(out)],
            check=True,
            timeout=60,
        )
        return out.read_bytes()


def voice_memo_3gp(seconds: int = 2) -> bytes:
    """Audio only, mono 8 kHz AAC in 3GPP: what a phone's voice recorder sends."""
    return ffmpeg(
        *("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"),
        *("-ac", "1", "-ar", "8000", "-c:a", "aac", "-b:a", "12k"),
        fmt="3gp",
    )


def video_3gp(seconds: int = 2) -> bytes:
    """QCIF H.263 video with AAC audio in 3GPP, as older phones record."""
    return ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=size=176x144:rate=10:duration={seconds}"),
        *("-f", "lavfi", "-i", f"sine=duration={seconds}"),
        *("-c:v", "h263", "-c:a", "aac", "-ar", "8000", "-ac", "1", "-shortest"),
        fmt="3gp",
    )


def audio_only_mp4(seconds: int = 2) -> bytes:
    """AAC in an MP4 with the isom brand (not M4A), which libmagic calls video/mp4."""
    return ffmpeg(*("-f", "lavfi", "-i", f"sine=duration={seconds}"), "-c:a", "aac", fmt="mp4")
